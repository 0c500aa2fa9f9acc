"""The machine under the course: what BCC needs from the running kernel.

- bcc_import  finds BCC (Debian installs it for the system Python only)
- headers     kernel headers for BCC, prepared if needed, checked against BTF
- layouts     every struct of the header set compared with BTF, member by member
- repair      structs that differ from BTF rewritten from it, or made unusable
- btf         a small reader of the kernel's BTF type information
- vmlinux     vmlinux.h made from BTF, and the clang command of CO-RE objects
- arch        architecture detection, syscall numbers for five architectures,
              how many CPUs per-CPU maps hold a value for

Nothing here imports from the rest of the package except `errors`.
"""
