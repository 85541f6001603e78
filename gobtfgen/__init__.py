"""gobtfgen: minimized, embedded kernel BTF for Go eBPF programs on kernels without BTF."""

__version__ = "0.1.0"
