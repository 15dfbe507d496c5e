; Temporary: parts of the kernel not written yet.
.section text
.function frame_init, aetherion::memory::frame::init
frame_init:
    ret
.endfunction
.function paging_init, aetherion::memory::paging::init
paging_init:
    ret
.endfunction
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
.function print_translations, aetherion::memory::paging::print_translations
print_translations:
    ret
.endfunction
.section testtable
.section rodata
