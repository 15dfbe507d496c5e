; Temporary: parts of the kernel not written yet.
.section text
.function allocator_init, aetherion::allocator::init
allocator_init:
    ret
.endfunction
.function demo_run, aetherion::demo::run
demo_run:
    ret
.endfunction
.function bench_run, aetherion::bench::run
bench_run:
    ret
.endfunction
.section testtable
.section rodata
