#!/usr/bin/env bash
# Checks that the hot loops of qlib's x86 GEMM micro-kernels keep their accumulators in
# registers: compiles every kernel tile (int8 dense, convolution, sparse N:M and block;
# fp32) with g++ and clang++ at -O2 and -O3, and with g++ -O3 -mtune=znver3 (what g++ 12
# makes of -march=native on Zen 3/4), finds in each function the loop with the most
# vpdpbusd/vpmaddwd/vfmadd, and counts the vector loads and stores to the stack inside it.
# Prints one line per (compiler, flags, kernel); exits 1 if any hot loop touches the
# stack, if an N:M tile's hot loop folds a load into a vpshufb or vpdpbusd (a load per
# row instead of one per column vector), or if the AVX-VNNI kernel (which must run on
# CPUs without AVX-512) contains an EVEX-encoded instruction.
#
# Why: g++ 12 -O3 (-ftree-partial-pre) has kept stack copies of accumulators inside
# these loops (19-37 zmm spills per k group, half the speed) whenever the code around
# the loop changed; see the empty asm "pins" in kernels/*/gemm_panel.hpp. With
# -mtune=znver3 g++ folded the indices and values of two of the N:M tile's four column
# vectors into every row's vpshufb/vpdpbusd, which made the 2:4 kernel load-bound
# (1.05-1.09x dense instead of 1.4x).
#   usage: bench/check_kernel_spills.sh [repo root]
set -euo pipefail
root=$(cd "${1:-$(dirname "$0")/..}" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/kernels.cpp" <<'CPP'
#include "qlib/kernels/avx2/gemm_panel.hpp"
#include "qlib/kernels/avx2/gemm_panel_7bit.hpp"
#include "qlib/kernels/avx512vnni/gemm_panel.hpp"
#include "qlib/kernels/avx_vnni/gemm_panel.hpp"
#include "qlib/kernels/avx512vnni/conv_panel.hpp"
#include "qlib/kernels/avx512vnni/sparse_block_panel.hpp"
#include "qlib/kernels/avx512vnni/sparse_nm_panel.hpp"
#include "qlib/kernels/avx2/sgemm_panel.hpp"
#include "qlib/kernels/avx512/sgemm_panel.hpp"
#include "qlib/gemm/output_stages.hpp"
using namespace qlib;
using namespace qlib::kernels;
#define TILE(MR, NV, F) template void avx512vnni_detail::tile<MR, NV, F>(index_t, const std::uint8_t*, index_t, \
    const std::int8_t*, const std::int32_t*, std::int32_t*, index_t, index_t);
TILE(6, 4, false) TILE(6, 4, true) TILE(5, 4, false) TILE(4, 4, true) TILE(3, 4, false) TILE(2, 4, true) TILE(1, 4, false)
// The narrow tiles (panels with <= 16, 32, 48 real columns) and their short-M heights.
TILE(12, 1, false) TILE(12, 1, true) TILE(6, 1, false) TILE(3, 1, true) TILE(2, 1, false) TILE(1, 1, true)
TILE(12, 2, false) TILE(12, 2, true) TILE(6, 2, true) TILE(3, 2, false) TILE(1, 2, false)
TILE(8, 3, false) TILE(8, 3, true) TILE(4, 3, false) TILE(2, 3, true) TILE(1, 3, false)
// The implicit-GEMM convolution tiles (nn/qconv2d_implicit.hpp), plain and with the fused uint8 epilogue.
#define CONV(MR, NV) template void avx512vnni_detail::conv_tile<MR, NV>(const std::uint8_t* const*, index_t, index_t, \
    index_t, const std::int8_t*, const std::int32_t*, std::int32_t*, index_t);
CONV(12, 1) CONV(12, 2) CONV(8, 3) CONV(6, 4)
using conv_pipeline = std::tuple<gemm::bias_add, gemm::requantize_float_per_channel, gemm::saturating_cast<std::uint8_t>>;
#define FUSED(MR, NV) template void avx512vnni_detail::conv_tile_fused<MR, NV, conv_pipeline, std::uint8_t>( \
    const std::uint8_t* const*, index_t, index_t, index_t, const std::int8_t*, const std::int32_t*, \
    const conv_pipeline&, std::uint8_t*, index_t, index_t, index_t, index_t);
FUSED(12, 1) FUSED(12, 2) FUSED(8, 3) FUSED(6, 4)
#define STRIP(NS, MR, F) template void NS::strip<MR, F>(index_t, const std::uint8_t*, index_t, const std::int8_t*, \
    const std::int32_t*, std::int32_t*);
STRIP(avx2_detail, 4, false) STRIP(avx2_detail, 4, true) STRIP(avx2_detail, 1, true)
STRIP(avx2_7bit_detail, 4, false) STRIP(avx2_7bit_detail, 4, true) STRIP(avx2_7bit_detail, 1, true)
STRIP(avx_vnni_detail::vex, 6, false) STRIP(avx_vnni_detail::vex, 6, true) STRIP(avx_vnni_detail::vex, 2, true)
STRIP(avx_vnni_detail::evex, 6, false) STRIP(avx_vnni_detail::evex, 6, true)
// The sparse tiles (prune/sparse_nm.hpp, prune/sparse_block.hpp): N:M full heights and some shorter ones.
#define NM(MR, NV) template void avx512vnni_sparse_detail::nm_tile<MR, NV>(index_t, int, const std::uint8_t*, index_t, \
    const std::int8_t*, const std::int32_t*, std::int32_t*, index_t, index_t);
NM(5, 4) NM(7, 3) NM(8, 2) NM(10, 1) NM(2, 4) NM(3, 3) NM(5, 1) NM(2, 2)
#define BLOCK(MR, F) template void avx512vnni_sparse_detail::block_tile<MR, F>(index_t, const std::uint8_t*, index_t, \
    const std::int32_t*, const std::int8_t*, index_t, const std::int32_t*, std::int32_t*, index_t, index_t);
BLOCK(12, false) BLOCK(12, true) BLOCK(2, false)
// The fp32 GEMM tiles (gemm/sgemm.hpp), A row-major and k-major.
#define SG512(MR, NV, R) template void avx512_sgemm_detail::tile<MR, NV, R>(index_t, const float*, index_t, \
    const float*, float*, index_t, index_t, const sgemm_tile_params&);
SG512(12, 2, true) SG512(12, 2, false) SG512(12, 1, true) SG512(7, 2, false) SG512(1, 2, true)
#define SG2(MR, R) template void avx2_sgemm_detail::tile<MR, R>(index_t, const float*, index_t, const float*, float*, \
    index_t, index_t, const sgemm_tile_params&);
SG2(6, true) SG2(6, false) SG2(3, true)
CPP
status=0
for config in "g++ -O2" "g++ -O3" "g++ -O3 -mtune=znver3" "clang++ -O2" "clang++ -O3"; do
    read -r -a cmd <<< "$config"
    "${cmd[@]}" -std=c++17 -DNDEBUG -I"$root/include" -c "$work/kernels.cpp" -o "$work/k.o"
    objdump -d --no-show-raw-insn -C "$work/k.o" > "$work/k.s"
    python3 - "$work/k.s" "$config" <<'PY' || status=1
import re, sys
text = open(sys.argv[1]).read()
bad = False
for fn in re.split(r'\n(?=[0-9a-f]+ <)', text):
    name = re.match(r'[0-9a-f]+ <(.*)>:', fn)
    if not name or not any(t in name.group(1) for t in ('tile<', 'tile_fused<', 'strip<')):
        continue
    lines = [l for l in fn.splitlines()[1:] if re.match(r'\s*[0-9a-f]+:', l)]
    addr = [int(l.split(':')[0], 16) for l in lines]
    best = None
    for i, l in enumerate(lines):
        m = re.search(r'\sj\w+\s+([0-9a-f]+)\s', l)
        if m and int(m.group(1), 16) < addr[i] and int(m.group(1), 16) in addr:
            body = lines[addr.index(int(m.group(1), 16)):i + 1]
            n = sum(('vpdpbusd' in x) or ('vpmaddwd' in x) or ('vfmadd' in x) for x in body)
            if n and (best is None or n > best[0]):
                best = (n, body)
    short = re.sub(r'qlib::kernels::|\(.*', '', name.group(1))
    if '::vex::' in name.group(1):
        # The AVX-VNNI kernel must run on CPUs without AVX-512: no EVEX-only encoding.
        evex = [x for x in lines if ('vpdpbusd' in x and '{vex}' not in x) or re.search(r'%[xyz]mm(1[6-9]|2\d|3[01])\b|%zmm|%k[0-7]|\{1to|vpbroadcast[bwdq]\s+%[er]', x)]
        if evex:
            print(f"{sys.argv[2]:21} {short:40} EVEX instruction in a VEX-only kernel: {evex[0].strip()}"); bad = True
    if best is None:
        print(f"{sys.argv[2]:21} {short:40} no loop found"); bad = True; continue
    n, body = best
    stack = sum(bool(re.search(r'\((%rsp|%rbp)\)', x)) and 'mm' in x for x in body)
    # N:M tiles load each column vector's values and indices once per step; a folded
    # vpshufb/vpdpbusd memory operand re-reads them for every row.
    folded = sum(bool(re.search(r'(vpshufb|vpdpbusd)\s+-?(0x[0-9a-f]+)?\(', x)) for x in body) if 'nm_tile<' in name.group(1) else 0
    print(f"{sys.argv[2]:21} {short:40} {n:2} multiply-adds, {stack} vector stack accesses" +
          (f", {folded} folded loads" if 'nm_tile<' in name.group(1) else ""))
    bad = bad or stack > 0 or folded > 0
sys.exit(1 if bad else 0)
PY
done
exit $status
