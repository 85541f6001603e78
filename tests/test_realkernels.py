"""The two sources of real kernels agree: where the sample (btfhub-archive's files) and the
Debian corpus (BTF gobtfgen extracted from Debian's kernel packages itself) hold the same kernel,
the BTF is byte for byte the same. This checks kernel-image extraction against an independent
producer on both arches; it exists only in runs that have both (CI has ../shared)."""

from __future__ import annotations

import pytest

from gobtfgen.archive import read_kernel_btf
from tests import corpus, realkernels

_CORPUS = {p.relative_to(corpus.ARCHIVE).as_posix().removesuffix(realkernels.SUFFIX): p
           for p in sorted(corpus.ARCHIVE.glob(f"*/*/*/*{realkernels.SUFFIX}"))}
_BOTH = [k for k in realkernels.KERNELS if k.source == "sample" and k.key in _CORPUS]

if _BOTH:
    @pytest.mark.parametrize("kernel", _BOTH, ids=[k.key for k in _BOTH])
    def test_corpus_extraction_equals_btfhubs_file(kernel: realkernels.RealKernel) -> None:
        assert read_kernel_btf(_CORPUS[kernel.key]) == read_kernel_btf(kernel.path)
