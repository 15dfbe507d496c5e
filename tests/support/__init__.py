"""Helpers the tests share: purpose-built guest kernels, hand-made ELF files, a QEMU runner,
reference allocator models, the cycle-model harness and the paths of the committed images."""
