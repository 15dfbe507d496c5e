; Temporary: parts of the kernel not written yet.
.section text
.function bench_run, aetherion::bench::run
bench_run:
    ret
.endfunction
.section testtable
.section rodata
