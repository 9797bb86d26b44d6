"""Pure helpers of the speed benchmark: pair generation, the FLOP count, the aggregation of repeated runs (median,
spread, each peer's best batch size) and the target verdicts. No venv, no model, no timing: results are synthetic
records whose expected numbers are worked out by hand below."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_flops import forward_flops, layer_flops, total_flops
from bench_pairs import PASSAGE_WORDS, QUERY_WORDS, generate_pairs, read_pairs, write_pairs
from bench_specs import SPECS
from bench_stats import (
    Measurement,
    best_row,
    defaults_row,
    ratio,
    ratio_range,
    spearman,
    sweep_settings,
)
from bench_verdicts import (
    BASELINE,
    MET,
    NOT_APPLICABLE,
    NOT_MEASURED,
    NOT_MET,
    Verdict,
    cpu_flags,
    matrix_units,
    native_bf16,
    verdicts,
)


def test_pairs_are_deterministic_per_seed() -> None:
    assert generate_pairs(50, seed=7) == generate_pairs(50, seed=7)
    assert generate_pairs(50, seed=7) != generate_pairs(50, seed=8)


def test_a_shorter_run_scores_a_prefix_of_a_longer_one() -> None:
    assert generate_pairs(200, seed=3)[:20] == generate_pairs(20, seed=3)


def test_pair_lengths_are_in_the_requested_word_ranges() -> None:
    pairs = generate_pairs(400, seed=11)
    query_lengths = [len(query.split()) for query, _ in pairs]
    passage_lengths = [len(passage.split()) for _, passage in pairs]
    assert min(query_lengths) >= QUERY_WORDS[0] and max(query_lengths) <= QUERY_WORDS[1]
    assert min(passage_lengths) >= PASSAGE_WORDS[0] and max(passage_lengths) <= PASSAGE_WORDS[1]
    # "mixed": both short and long passages occur, not one fixed length.
    assert min(passage_lengths) < 60 and max(passage_lengths) > 170
    assert len(set(query_lengths)) > 5


def test_pairs_round_trip_through_the_pairs_file(tmp_path: Path) -> None:
    pairs = generate_pairs(5, seed=1)
    write_pairs(tmp_path / "pairs.json", pairs)
    assert read_pairs(tmp_path / "pairs.json") == pairs


def test_bert_base_layer_flops_match_the_hand_count() -> None:
    # BERT-base shape at 128 tokens, worked out by hand:
    # Q,K,V,O projections 4 * 2*128*768*768 = 603,979,776; attention 2 * 2*128*128*768 = 50,331,648;
    # FFN 2 * 2*128*768*3072 = 1,207,959,552.
    bert_base = replace(SPECS["xlmr-base"])
    assert layer_flops(bert_base, 128) == 603_979_776 + 50_331_648 + 1_207_959_552


def test_encoder_forward_adds_layers_and_the_cls_head() -> None:
    spec = SPECS["minilm"]
    head = 2 * 384 * 384 + 2 * 384
    assert forward_flops(spec, 100) == 6 * layer_flops(spec, 100) + head


def test_decoder_counts_grouped_kv_gated_mlp_and_one_lm_head_row() -> None:
    spec = SPECS["llm"]  # hidden 1024, 8 query heads and 1 kv head of 128, intermediate 4096, vocab 32000
    tokens = 10
    projections = 2 * tokens * 1024 * (1024 + 2 * 128) + 2 * tokens * 1024 * 1024
    attention = 4 * tokens * tokens * 1024
    mlp = 3 * 2 * tokens * 1024 * 4096
    assert layer_flops(spec, tokens) == projections + attention + mlp
    assert forward_flops(spec, tokens) == 16 * (projections + attention + mlp) + 2 * 1024 * 32000


def test_total_flops_sums_per_pair_counts() -> None:
    spec = SPECS["minilm"]
    assert total_flops(spec, [10, 20]) == forward_flops(spec, 10) + forward_flops(spec, 20)
    assert total_flops(spec, []) == 0


@pytest.mark.parametrize("name", sorted(SPECS))
def test_spec_fingerprints_change_with_the_shape(name: str) -> None:
    spec = SPECS[name]
    assert spec.fingerprint() == SPECS[name].fingerprint()
    assert replace(spec, layers=spec.layers + 1).fingerprint() != spec.fingerprint()


def test_spearman_reads_ranks_not_values() -> None:
    scores = [0.1, 0.5, 0.2, 0.9, 0.3]
    assert spearman(scores, [x**3 + 7 for x in scores]) == pytest.approx(1.0)
    assert spearman(scores, [-x for x in scores]) == pytest.approx(-1.0)


def test_spearman_gives_tied_scores_their_mean_rank() -> None:
    # ranks (0, 1.5, 1.5, 3) against (0, 1, 2, 3): covariance 4.5, variances 4.5 and 5.
    assert spearman([1.0, 2.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]) == pytest.approx(4.5 / (4.5 * 5) ** 0.5)


def test_spearman_refuses_score_lists_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="3 scores with 2"):
        spearman([1.0, 2.0, 3.0], [1.0, 2.0])


# ---- aggregation of repeated runs ----------------------------------------------------------------------------

PAIRS = 100
SCORES = [float(i) for i in range(10)]


def row(
    label: str,
    rates: list[float],
    *,
    model: str = "minilm",
    library: str | None = None,
    batch: int | None = None,
    rss: list[float] | None = None,
    scores: list[float] | None = None,
    used_batch: int | None = None,
) -> Measurement:
    """A row whose runs scored PAIRS pairs at the given pairs/s (seconds = PAIRS / rate)."""
    if library is None:
        library = "autorerank" if label.startswith("autorerank") else "flagembedding"
    m = Measurement(model, label, library, batch)
    for index, rate in enumerate(rates):
        result = {
            "pairs": PAIRS,
            "seconds": PAIRS / rate,
            "scores": list(SCORES if scores is None else scores),
            "batch_size": batch if used_batch is None else used_batch,
            "version": "1.0",
            "torch": "2.x",
            "threads": 2,
        }
        m.add_run(result, (rss or [500.0] * len(rates))[index])
    return m


def test_a_row_reports_the_median_and_the_range_of_its_repeats() -> None:
    # seconds 10, 5 and 4 for 100 pairs: 10, 20 and 25 pairs/s.
    m = Measurement("minilm", "FlagEmbedding fp32", "flagembedding", 8)
    for seconds, rss in [(10.0, 600.0), (5.0, 650.0), (4.0, 620.0)]:
        m.add_run({"pairs": 100, "seconds": seconds, "scores": SCORES, "batch_size": 8}, rss)
    assert m.rates == [10.0, 20.0, 25.0]
    assert m.median == 20.0
    assert (m.low, m.high) == (10.0, 25.0)
    assert m.peak_rss_mib == 650.0  # the largest of any run
    assert m.ok


def test_the_median_of_an_even_number_of_repeats_is_the_mean_of_the_middle_two() -> None:
    assert row("autorerank fp32", [40.0, 10.0, 30.0, 20.0]).median == 25.0


def test_settings_are_named_by_the_batch_size_asked_for_or_the_one_the_defaults_used() -> None:
    assert row(BASELINE, [1.0], used_batch=128).setting == "defaults (batch 128)"
    assert row(BASELINE, [1.0], batch=8).setting == "batch 8"
    assert row("autorerank fp32", [1.0]).setting == "defaults"  # token budget: no batch size


def test_the_best_row_has_the_highest_median_not_the_fastest_single_run() -> None:
    lucky = row(BASELINE, [10.0, 11.0, 100.0], batch=4)  # one fast outlier, median 11
    steady = row(BASELINE, [20.0, 21.0, 22.0], batch=8)  # median 21
    failed = row(BASELINE, [500.0], batch=16)
    failed.error = "killed"
    assert best_row([lucky, steady, failed]) is steady


def test_the_defaults_row_is_the_one_without_a_batch_size() -> None:
    swept = row(BASELINE, [80.0], batch=8)
    defaults = row(BASELINE, [40.0], used_batch=128)
    assert defaults_row([swept, defaults]) is defaults
    assert best_row([swept, defaults]) is swept


def test_ratio_range_pairs_the_slowest_run_with_the_fastest_and_back() -> None:
    a = row("autorerank fp32", [10.0, 20.0, 30.0])
    b = row(BASELINE, [5.0, 10.0, 20.0])
    assert ratio(a, b) == 2.0  # medians 20 / 10
    assert ratio_range(a, b) == (10.0 / 20.0, 30.0 / 5.0)


def test_the_sweep_skips_the_library_default_and_repeats_of_one_batch() -> None:
    full = (4, 8, 16, 32, 64, 128)
    # FlagEmbedding (default 128) on 512 pairs: 128 is its defaults row.
    assert sweep_settings(128, full, 512) == ([4, 8, 16, 32, 64], {128: None})
    # sentence-transformers (default 32) on 512 pairs.
    assert sweep_settings(32, full, 512) == ([4, 8, 16, 64, 128], {32: None})
    # On 32 pairs, batches of 32 and more all score every pair in one batch, as the defaults do.
    assert sweep_settings(128, full, 32) == ([4, 8, 16], {32: None, 64: None, 128: None})
    # On 50 pairs with a default of 32, 64 is one batch of 50 and 128 repeats it.
    assert sweep_settings(32, (4, 64, 128), 50) == ([4, 64], {128: 64})
    assert sweep_settings(128, (), 512) == ([], {})


# ---- verdicts -----------------------------------------------------------------------------------------------


def only(found: list[Verdict], target: str, model: str | None = None) -> list[Verdict]:
    return [v for v in found if v.target == target and (model is None or v.model == model)]


def fe_sweep(model: str = "minilm", rss_best: float = 600.0) -> list[Measurement]:
    """FlagEmbedding fp32 at its defaults (40 pairs/s, 800 MiB) and at batch 8, its best (80 pairs/s)."""
    return [
        row(BASELINE, [39.0, 40.0, 41.0], model=model, used_batch=128, rss=[800.0] * 3),
        row(BASELINE, [78.0, 80.0, 82.0], model=model, batch=8, rss=[rss_best] * 3),
        row(BASELINE, [70.0, 71.0, 72.0], model=model, batch=16, rss=[650.0] * 3),
    ]


def test_fp32_is_judged_against_the_peer_at_its_best_not_at_its_defaults() -> None:
    # 88 pairs/s is 2.2x FlagEmbedding's defaults (40) but only 1.1x its best (80): below the 1.2x target.
    rows = [*fe_sweep(), row("autorerank fp32", [86.0, 88.0, 90.0], rss=[550.0] * 3)]
    (verdict,) = only(verdicts(rows, {}, 0.0, has_native_bf16=False), "fp32")
    assert verdict.status == NOT_MET
    assert "1.10x" in verdict.detail
    # the range pairs 86 with FE's fastest run (82) and 90 with its slowest (78)
    assert f"{86 / 82:.2f}-{90 / 78:.2f}x over repeats)" in verdict.detail  # 1.05-1.15x: all below 1.2x
    assert "batch 8" in verdict.detail


def test_fp32_target_met_reports_the_fraction_of_the_matmul_peak() -> None:
    # 3 GFLOP/pair on a 400 GFLOP/s machine: 100 pairs/s is 75% of peak, FlagEmbedding's 80 pairs/s 60%.
    rows = [*fe_sweep(), row("autorerank fp32", [99.0, 100.0, 101.0])]
    (verdict,) = only(verdicts(rows, {"minilm": 3e9}, 400.0, has_native_bf16=False), "fp32")
    assert verdict.status == MET
    assert "1.25x (1.21-1.29x over repeats)" in verdict.detail
    assert "75% of the fp32 matmul peak (FlagEmbedding 60%)" in verdict.detail


def test_layer_kinds_need_one_and_a_half_times_the_peer_with_its_scores() -> None:
    same = row("autorerank fp32", [120.0] * 3, model="layerwise", scores=[s + 5e-4 for s in SCORES])  # 1.5x
    (met,) = only(verdicts([*fe_sweep("layerwise"), same], {}, 0.0, has_native_bf16=False), "fp32")
    assert met.status == MET and "scores within 5.0e-04 of FE's" in met.detail
    drifted = row("autorerank fp32", [120.0] * 3, model="lightweight", scores=[s + 2e-3 for s in SCORES])
    (missed,) = only(verdicts([*fe_sweep("lightweight"), drifted], {}, 0.0, has_native_bf16=False), "fp32")
    assert missed.status == NOT_MET
    slow = row("autorerank fp32", [110.0] * 3, model="layerwise")  # 1.38x: enough on MiniLM, not here
    (slower,) = only(verdicts([*fe_sweep("layerwise"), slow], {}, 0.0, has_native_bf16=False), "fp32")
    assert slower.status == NOT_MET and "target >= 1.5x" in slower.detail


def test_a_target_whose_rows_are_missing_is_not_measured() -> None:
    found = verdicts(fe_sweep(), {}, 0.0, has_native_bf16=True)
    assert {v.status for v in only(found, "fp32")} == {NOT_MEASURED}
    assert {v.status for v in only(found, "bf16")} == {NOT_MEASURED}
    assert {v.status for v in only(found, "int8")} == {NOT_MEASURED}
    assert "--use-bf16" in only(found, "bf16")[0].detail


def test_bf16_does_not_apply_without_native_bf16() -> None:
    rows = [*fe_sweep(), row("autorerank bf16", [300.0] * 3)]
    (verdict,) = only(verdicts(rows, {}, 0.0, has_native_bf16=False), "bf16")
    assert verdict.status == NOT_APPLICABLE


def test_bf16_needs_the_speed_and_a_faithful_ranking() -> None:
    fast = row("autorerank bf16", [200.0, 208.0, 210.0])  # 2.6x FlagEmbedding's best (80)
    (verdict,) = only(verdicts([*fe_sweep(), fast], {}, 0.0, has_native_bf16=True), "bf16")
    assert verdict.status == MET
    assert "2.60x" in verdict.detail and "Spearman 1.0000" in verdict.detail
    # One adjacent swap among 10 scores: Spearman 1 - 6 * 2 / (10 * 99) = 0.9879 < 0.999.
    swapped = [0.0, 1.0, 2.0, 3.0, 5.0, 4.0, 6.0, 7.0, 8.0, 9.0]
    unfaithful = row("autorerank bf16", [200.0, 208.0, 210.0], scores=swapped)
    (verdict,) = only(verdicts([*fe_sweep(), unfaithful], {}, 0.0, has_native_bf16=True), "bf16")
    assert verdict.status == NOT_MET
    assert f"Spearman {1 - 12 / 990:.4f}" in verdict.detail


def test_int8_must_beat_three_times_the_peer_and_bf16() -> None:
    int8 = row("autorerank openvino int8", [250.0, 256.0, 260.0])  # 3.2x FlagEmbedding's best
    slower_bf16 = row("autorerank bf16", [200.0] * 3)
    faster_bf16 = row("autorerank bf16", [280.0] * 3)
    (met,) = only(verdicts([*fe_sweep(), slower_bf16, int8], {}, 0.0, has_native_bf16=True), "int8")
    assert met.status == MET
    assert "3.20x" in met.detail and "1.28x autorerank bf16" in met.detail
    (missed,) = only(verdicts([*fe_sweep(), faster_bf16, int8], {}, 0.0, has_native_bf16=True), "int8")
    assert missed.status == NOT_MET
    (unchecked,) = only(verdicts([*fe_sweep(), int8], {}, 0.0, has_native_bf16=True), "int8")
    assert unchecked.status == NOT_MEASURED


def test_the_llm_needs_the_speed_and_half_the_peers_peak_memory() -> None:
    fe = fe_sweep("llm", rss_best=3000.0)  # its best setting peaks at 3000 MiB (its defaults at 800 here)
    lean = row("autorerank fp32", [128.0] * 3, model="llm", rss=[1400.0] * 3)  # 1.6x, 0.47x memory
    heavy = row("autorerank bf16", [160.0] * 3, model="llm", rss=[1600.0] * 3)  # 2.0x, 0.53x memory
    found = only(verdicts([*fe, lean, heavy], {}, 0.0, has_native_bf16=True), "llm")
    assert [v.status for v in found] == [MET, NOT_MET]
    assert "0.47x peak memory" in found[0].detail
    assert "Spearman" not in found[0].detail and "Spearman 1.0000" in found[1].detail


def test_memory_compares_every_autorerank_row_with_the_peer_at_its_best() -> None:
    # FlagEmbedding's best (batch 8) peaks at 600 MiB; its defaults at 800 MiB do not count.
    under = row("autorerank fp32", [90.0] * 3, rss=[550.0, 590.0, 560.0])
    over = row("autorerank bf16", [200.0] * 3, rss=[610.0, 700.0, 650.0])
    (met,) = only(verdicts([*fe_sweep(), under], {}, 0.0, has_native_bf16=True), "memory")
    assert met.status == MET and "590 MiB (0.98x)" in met.detail
    (missed,) = only(verdicts([*fe_sweep(), under, over], {}, 0.0, has_native_bf16=True), "memory")
    assert missed.status == NOT_MET
    assert "over: autorerank bf16" in missed.detail and "700 MiB (1.17x)" in missed.detail


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_vnni avx512_bf16\n")
    assert cpu_flags(cpuinfo) == {"fpu", "sse2", "avx512f", "avx512_vnni", "avx512_bf16"}
    assert native_bf16(cpu_flags(cpuinfo))
    assert native_bf16({"amx_bf16", "amx_tile"})
    assert not native_bf16({"avx512f", "avx512_vnni"})
    assert matrix_units(cpu_flags(cpuinfo)) == ["avx512_vnni", "avx512_bf16"]
    assert matrix_units({"amx_int8", "amx_tile", "amx_bf16", "sse2"}) == ["amx_bf16", "amx_int8"]
    assert cpu_flags(tmp_path / "missing") == set()


# ---- the run's plan -----------------------------------------------------------------------------------------


def test_a_full_run_sweeps_both_peers_and_runs_autorerank_at_its_defaults() -> None:
    import run

    args = run.parse_args([])
    assert args.sweep == (4, 8, 16, 32, 64, 128) and args.repeats == 3
    variants = [v for v in run.VARIANTS if v.flag is None and "minilm" in v.models]
    rows, notes = run.plan_rows(variants, "minilm", run.pair_count(args, "minilm"), args.sweep)
    settings = [(m.label, m.batch_size) for _, m in rows]
    fe = [None, 4, 8, 16, 32, 64]  # 128 is its defaults
    st = [None, 4, 8, 16, 64, 128]  # 32 is its defaults
    assert settings == (
        [(BASELINE, b) for b in fe]
        + [("sentence-transformers fp32", b) for b in st]
        + [("autorerank fp32", None)]
    )
    assert len(notes) == 2


def test_quick_and_explicit_flags_shrink_the_run() -> None:
    import run

    quick = run.parse_args(["--quick"])
    assert quick.sweep == () and quick.repeats == 1
    assert run.pair_count(quick, "minilm") < run.pair_count(run.parse_args([]), "minilm")
    assert run.parse_args(["--no-sweep"]).sweep == ()
    chosen = run.parse_args(
        ["--quick", "--sweep", "32,8", "--repeats", "3", "--pairs", "16", "--llm-pairs", "4"]
    )
    assert chosen.sweep == (8, 32) and chosen.repeats == 3
    assert run.pair_count(chosen, "xlmr-base") == 16 and run.pair_count(chosen, "llm") == 4
    with pytest.raises(SystemExit):
        run.parse_args(["--sweep", "8,zero"])


def test_the_report_prints_medians_spreads_the_winning_batch_and_both_ratios(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bench_report import print_report

    rows = [*fe_sweep(), row("autorerank fp32", [99.0, 100.0, 101.0], rss=[550.0] * 3)]
    work = {"minilm": {"pairs": PAIRS, "tokens": 16_000, "flops": 3e9 * PAIRS}}
    samples = [{"when": "start", "best_gflops": 400.0, "torch": "2.x", "threads": 2}]
    print_report(rows, work, 400.0, samples, sweep=(8, 16), repeats=3, units=["amx_bf16"])
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "Native bf16 (AVX512-BF16 or AMX): yes; matrix units: amx_bf16." in out
    best = next(line for line in lines if "batch 8 *best" in line)
    assert "80.00" in best and "[78.00-82.00]" in best and "2.00x" in best  # 80 / FE's defaults 40
    ours = next(line for line in lines if line.startswith("minilm") and "autorerank fp32" in line)
    assert "1.25x" in ours and "2.50x" in ours and "75%" in ours  # 100 / 80, 100 / 40, 300 of 400 GFLOP/s
    assert "best: batch 8 80.00 [78.00-82.00] pairs/s, 2.00x its defaults" in out
    assert "1.25x FlagEmbedding fp32 at its best [batch 8], 2.50x at its defaults" in out
    assert "fp32   minilm" in out and ": MET" in out


def test_a_verdict_flags_a_spread_that_reaches_both_sides_of_the_target() -> None:
    # medians 100 vs 80 (1.25x, met), but 90 / 82 = 1.10x is below 1.2x and 110 / 78 = 1.41x above it.
    rows = [*fe_sweep(), row("autorerank fp32", [90.0, 100.0, 110.0])]
    (verdict,) = only(verdicts(rows, {}, 0.0, has_native_bf16=False), "fp32")
    assert verdict.status == MET
    assert "(1.10-1.41x over repeats, crosses the target)" in verdict.detail


def test_gpu_report_takes_flagembedding_at_its_best_batch_per_precision() -> None:
    """bench_gpu's summary on synthetic rows: medians over rounds, the reference's fastest batch per precision,
    speed and GPU-memory ratios against it, and fp16/bf16 agreement with autorerank's own fp32."""
    from bench_gpu import report

    def row(library, precision, batch, speed, peak, scores=(1.0, 2.0, 3.0)):
        return {"library": library, "precision": precision, "batch_size": batch, "pairs_per_s": speed,
                "gpu_peak_mib": peak, "scores": list(scores)}  # fmt: skip

    rows = [
        row("flagembedding", "fp16", 64, 100.0, 800.0), row("flagembedding", "fp16", 64, 120.0, 800.0),
        row("flagembedding", "fp16", 128, 150.0, 1000.0), row("flagembedding", "fp16", 128, 130.0, 1000.0),
        row("flagembedding", "fp32", 64, 50.0, 2000.0), row("flagembedding", "fp32", 128, 40.0, 3000.0),
        row("autorerank", "fp16", None, 280.0, 500.0), row("autorerank", "fp16", None, 300.0, 500.0),
        row("autorerank", "bf16", None, 210.0, 500.0, scores=(1.0, 3.0, 2.0)),
        row("autorerank", "fp32", None, 75.0, 1000.0, scores=(1.0, 2.0, 3.5)),
    ]  # fmt: skip
    summary = report("m", rows)
    assert summary["reference_fp16_best_batch"] == 128 and summary["reference_fp32_best_batch"] == 64
    assert summary["autorerank_fp16_vs_reference_fp16_best"] == pytest.approx({"speed": 290 / 140, "memory": 0.5})
    assert summary["autorerank_bf16_vs_reference_fp16_best"]["speed"] == pytest.approx(1.5)
    assert summary["autorerank_fp32_vs_reference_fp32_best"] == pytest.approx({"speed": 1.5, "memory": 0.5})
    assert summary["fp32_max_diff_vs_reference"] == pytest.approx(0.5)  # against the reference's best fp32 row
    assert summary["fp16_spearman_vs_fp32"] == pytest.approx(1.0) and summary["bf16_spearman_vs_fp32"] == pytest.approx(0.5)
