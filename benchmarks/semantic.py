"""Semantic checks on Banking77: paraphrased test leaks, semantic near-duplicates, throughput.

Corrupts the bundled Banking77 (seeded) with edits of its own, one-word ones among them:
- leaks: test rows copied into train, as is or with one edit (case, punctuation, typo, one word
  substituted / inserted / deleted, two words swapped);
- copies: train rows copied with the same edits.
Then measures, per rule and threshold, leak recall and the share of clean train rows removed
(``quality``), and the speed of embedding and of the neighbour search (``speed``, 100k rows; 1M
extrapolated from a measured slice). Writes benchmarks/results/semantic.json.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/semantic.py quality
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/semantic.py quality --model static  # -> quality_static
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/semantic.py combined --model static  # one word AND cosine
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/semantic.py speed --rows 100000
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import polars as pl

from curation.decontam import one_word_leaks, one_word_pairs, remove_test_leaks
from curation.dedup import drop_duplicates
from curation.semantic import clusters_of, nearest_neighbours, outlier_scores, semantic_pairs
from flows.embed_cache import cached_embedder, raw_embedder
from schemas.params import DecontamParams, DedupParams
from schemas.semantic_params import SemanticParams

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "semantic.json"
EDITS = ("exact", "case", "punctuation", "typo", "word_replace", "word_insert", "word_delete", "word_swap")
OFF_TOPIC = (
    "The mitochondria is the powerhouse of the cell",
    "Preheat the oven to 180 degrees and grease the tin",
    "Who won the football world cup in 1998?",
    "Photosynthesis converts light into chemical energy",
    "My cat keeps knocking the plant off the windowsill",
    "Translate this poem into French please",
    "What is the tallest mountain in South America?",
    "The train to Edinburgh leaves from platform nine",
    "How many legs does a spider have?",
    "Recommend a good science fiction novel",
)


def edit(text: str, kind: str, rng: np.random.Generator, vocab: list[str]) -> str:
    words = text.split()
    if kind == "case":
        return text.lower() if rng.random() < 0.5 else text.upper()
    if kind == "punctuation":
        return text.rstrip("?.!") + str(rng.choice(["", "!", "?", "..."]))
    if kind == "typo" and len(text) > 3:
        i = int(rng.integers(1, len(text) - 1))
        return text[:i] + text[i + 1 :]
    if kind == "word_replace" and len(words) > 1:
        words[int(rng.integers(len(words)))] = str(rng.choice(vocab))
    elif kind == "word_insert":
        words.insert(int(rng.integers(len(words) + 1)), str(rng.choice(vocab)))
    elif kind == "word_delete" and len(words) > 2:
        del words[int(rng.integers(len(words)))]
    elif kind == "word_swap" and len(words) > 2:
        i = int(rng.integers(len(words) - 1))
        words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


def load() -> tuple[pl.DataFrame, pl.DataFrame]:
    def frame(name: str, prefix: str, split: str) -> pl.DataFrame:
        return (
            pl.read_csv(ROOT / "data/raw" / name)
            .rename({"category": "label"})
            .with_row_index("line", offset=1)
            .with_columns(
                id=pl.format(prefix + "{}", "line"), split=pl.lit(split), line=pl.col("line").cast(pl.Int64)
            )
            .with_columns(text_hash=pl.col("text").hash(1).cast(pl.String))
        )

    return frame("train.csv", "r", "train"), frame("test.csv", "t", "test")


def corrupted(train: pl.DataFrame, test: pl.DataFrame, *, seed: int, leaks: int, copies: int):
    rng = np.random.default_rng(seed)
    vocab = sorted({w for t in train["text"].to_list()[:2000] for w in t.split() if w.isalpha()})
    new, truth_leak, truth_copy = [], {}, {}
    line = train.height
    for k, j in enumerate(rng.choice(test.height, size=leaks, replace=False)):
        line += 1
        kind = EDITS[k % len(EDITS)]
        new.append((f"L{k}", line, edit(test["text"][int(j)], kind, rng, vocab), test["label"][int(j)], kind))
        truth_leak[f"L{k}"] = (test["id"][int(j)], kind)
    for k, i in enumerate(rng.choice(train.height, size=copies, replace=False)):
        line += 1
        kind = EDITS[k % len(EDITS)]
        new.append(
            (f"C{k}", line, edit(train["text"][int(i)], kind, rng, vocab), train["label"][int(i)], kind)
        )
        truth_copy[f"C{k}"] = (train["id"][int(i)], kind)
    extra = pl.DataFrame(new, schema=["id", "line", "text", "label", "kind"], orient="row").with_columns(
        split=pl.lit("train"), text_hash=pl.col("text").hash(1).cast(pl.String)
    )
    full = pl.concat([train, extra.select(train.columns)], how="vertical_relaxed")
    return full, truth_leak, truth_copy


def quality(
    seed: int,
    leaks: int,
    copies: int,
    only: str | None = None,
    previous: dict | None = None,
    model: str = "minilm",
) -> dict:
    train, test = load()
    full, truth_leak, truth_copy = corrupted(train, test, seed=seed, leaks=leaks, copies=copies)
    sem = SemanticParams(enabled=True, model=model)
    embed = cached_embedder(sem, base_dir=ROOT, show_progress=True)
    t0 = time.perf_counter()
    e_train, e_test = embed(full["text"].to_list()), embed(test["text"].to_list())
    embed_s = time.perf_counter() - t0
    # throughput without the cache: the same 13k texts once more, CPU seconds of this process
    raw = raw_embedder(sem, base_dir=ROOT)
    raw(["warm up"])
    c0 = time.process_time()
    raw(full["text"].to_list() + test["text"].to_list())
    embed_cpu = time.process_time() - c0
    clean_ids = set(train["id"].to_list())
    leak_ids = set(truth_leak)
    result: dict = {
        "seed": seed,
        "leaks": leaks,
        "copies": copies,
        "model": model,
        "embed_seconds_13k_texts": round(embed_s, 1),
        "embed_cpu_seconds_13k_texts_uncached": round(embed_cpu, 2),
        "embed_texts_per_cpu_s": round((full.height + test.height) / embed_cpu, 1),
    }
    # --- decontam: each rule set and threshold
    rows = []
    if only == "dedup" and previous:
        result["decontam"] = previous.get("decontam", [])
        settings = []
    else:
        settings = [("minhash only (before)", dict(one_word=False, semantic_threshold=None))]
    for mw in (4, 6, 8, 10, 12) if settings else ():
        settings.append((f"+ one_word min_words={mw}", dict(one_word_min_words=mw, semantic_threshold=None)))
    for mw in (8, 10, 12) if settings else ():
        for thr in (0.9, 0.92, 0.94, 0.96, 0.97, 0.98):
            settings.append(
                (f"+ one_word {mw} + semantic {thr}", dict(one_word_min_words=mw, semantic_threshold=thr))
            )
    for name, kw in settings:
        cfg = DecontamParams(**kw)
        out = remove_test_leaks(
            full, test, cfg=cfg, minhash=DedupParams(), train_embeddings=e_train, test_embeddings=e_test
        )
        gone = set(out.removed["id"].to_list())
        missed = sorted(leak_ids - gone)
        rows.append(
            {
                "rule": name,
                "leak_recall": round(1 - len(missed) / len(leak_ids), 4),
                "clean_removed": len(gone & clean_ids),
                "clean_removed_rate": round(len(gone & clean_ids) / len(clean_ids), 4),
                "missed_by_edit": dict(
                    sorted(
                        pl.Series([truth_leak[m][1] for m in missed], dtype=pl.String).value_counts().rows()
                    )
                ),
            }
        )
        print(rows[-1])
    if settings:
        result["decontam"] = rows
    # --- dedup: MinHash first (as the pipeline), then semantic pairs on what it kept
    dd = drop_duplicates(full.filter(~pl.col("id").is_in(list(leak_ids))), cfg=DedupParams())
    kept = dd.kept
    caught_minhash = {i for i in truth_copy if i not in set(kept["id"].to_list())}
    emb_kept = embed(kept["text"].to_list())
    drows = []
    grid = [(thr, None) for thr in (0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99)]
    grid += [(1.01, mw) for mw in (4, 6, 8, 10)] + [(0.98, mw) for mw in (8, 10)]
    for thr, mw in grid:
        pairs, _ = semantic_pairs(emb_kept, threshold=thr, k=10)
        if mw is not None:
            pairs = np.concatenate([pairs, one_word_pairs(kept, min_words=mw, same_label=True)])
        cluster = clusters_of(kept.height, pairs)
        f = kept.with_columns(_c=pl.Series(cluster)).sort("line")
        rep = f.group_by("_c", maintain_order=True).agg(pl.col("id").first().alias("_rep"))
        members = f.join(rep, on="_c").filter(pl.col("id") != pl.col("_rep"))
        hit = set(members["id"].to_list())
        caught = caught_minhash | (hit & set(truth_copy))
        involved = set(truth_copy) | {v for v, _ in truth_copy.values()}
        clean_hit = hit & (clean_ids - involved)
        drows.append(
            {
                "cosine": None if thr > 1 else thr,
                "one_word_min_words": mw,
                "copy_recall": round(len(caught) / len(truth_copy), 4),
                "other_rows_removed_or_held": len(clean_hit),
                "other_rate": round(len(clean_hit) / len(clean_ids - involved), 4),
            }
        )
        print(drows[-1])
    result["dedup_minhash_copy_recall"] = round(len(caught_minhash) / len(truth_copy), 4)
    result["dedup"] = drows
    # --- outliers: planted off-topic texts among the banking queries
    planted = list(OFF_TOPIC)
    e_out = np.concatenate([e_train[: train.height], embed(planted)])
    scores = outlier_scores(e_out, k=10)
    top = np.argsort(-scores, kind="stable")
    result["outliers"] = {
        "planted": len(planted),
        "planted_in_top_10": int(np.isin(np.arange(train.height, len(e_out)), top[:10]).sum()),
        "planted_in_top_50": int(np.isin(np.arange(train.height, len(e_out)), top[:50]).sum()),
        "score_quantiles_clean": {
            q: round(float(np.quantile(scores[: train.height], q)), 4) for q in (0.5, 0.9, 0.99, 0.995, 0.999)
        },
        "planted_min_score": round(float(scores[train.height :].min()), 4),
    }
    print(result["outliers"])
    return result


def combined(seed: int, leaks: int, copies: int, model: str) -> dict:
    """One word apart *and* semantically close: the one-word rule for short texts (down to 3
    words), gated by the cosine of the two rows, on top of the default one-word rule (10 words).

    The question: do embeddings tell a planted one-word copy from Banking77's natural one-word
    paraphrases ("cancel a purchase" / "cancel my purchase")? Rows: per min_words and cosine,
    leak recall / clean rows removed (decontam) and copy recall / other rows touched (dedup).
    """
    from curation.dedup import dedup_key

    train, test = load()
    full, truth_leak, truth_copy = corrupted(train, test, seed=seed, leaks=leaks, copies=copies)
    embed = cached_embedder(SemanticParams(enabled=True, model=model), base_dir=ROOT, show_progress=True)
    e_tr, e_te = embed(full["text"].to_list()), embed(test["text"].to_list())
    clean_ids, leak_ids = set(train["id"].to_list()), set(truth_leak)
    base = remove_test_leaks(full, test, cfg=DecontamParams(one_word_min_words=10), minhash=DedupParams())
    gone0 = set(base.removed["id"].to_list())
    tr = full.with_columns(_key=dedup_key(pl.col("text"))).with_row_index("_i")
    te = test.with_columns(_key=dedup_key(pl.col("text"))).sort("id").with_row_index("_j")
    test_row = {t: k for k, t in enumerate(test["id"].to_list())}
    out: dict = {"model": model, "decontam": [], "dedup": []}
    for mw in (3, 4, 6):
        ow = one_word_leaks(tr, te, min_words=mw, same_label=True)
        i = ow["_i"].to_numpy().astype(np.int64)
        j = np.array([test_row[t] for t in ow["_test_id"].to_list()], dtype=np.int64)
        cos = np.einsum("ij,ij->i", e_tr[i], e_te[j]) if len(i) else np.zeros(0)
        for thr in (0.7, 0.8, 0.85, 0.9, 0.95):
            gone = gone0 | set(full["id"].gather(i[cos >= thr]).to_list())
            out["decontam"].append(
                {
                    "one_word_min_words": mw,
                    "cosine": thr,
                    "leak_recall": round(1 - len(leak_ids - gone) / len(leak_ids), 4),
                    "clean_removed_rate": round(len(gone & clean_ids) / len(clean_ids), 4),
                }
            )
    kept = drop_duplicates(full.filter(~pl.col("id").is_in(list(leak_ids))), cfg=DedupParams()).kept
    caught_minhash = {i for i in truth_copy if i not in set(kept["id"].to_list())}
    ek = embed(kept["text"].to_list())
    involved = set(truth_copy) | {v for v, _ in truth_copy.values()}
    other = clean_ids - involved
    long_pairs = one_word_pairs(kept, min_words=10, same_label=True)
    for mw in (3, 4, 6):
        p = one_word_pairs(kept, min_words=mw, same_label=True)
        cos = np.einsum("ij,ij->i", ek[p[:, 0]], ek[p[:, 1]])
        for thr in (0.8, 0.85, 0.9, 0.95):
            cluster = clusters_of(kept.height, np.concatenate([long_pairs, p[cos >= thr]]))
            f = kept.with_columns(_c=pl.Series(cluster)).sort("line")
            rep = f.group_by("_c", maintain_order=True).agg(pl.col("id").first().alias("_rep"))
            hit = set(f.join(rep, on="_c").filter(pl.col("id") != pl.col("_rep"))["id"].to_list())
            out["dedup"].append(
                {
                    "one_word_min_words": mw,
                    "cosine": thr,
                    "copy_recall": round(len(caught_minhash | (hit & set(truth_copy))) / len(truth_copy), 4),
                    "other_rate": round(len(hit & other) / len(other), 4),
                }
            )
    for row in out["decontam"] + out["dedup"]:
        print(row)
    return out


def speed(rows: int, seed: int) -> dict:
    train, _ = load()
    sem = SemanticParams(enabled=True, model="minilm", cache_dir=None)
    embed = cached_embedder(sem)
    sample = train["text"].to_list()[:1000]
    t0 = time.perf_counter()
    base = embed(sample)
    per_s = len(sample) / (time.perf_counter() - t0)
    # search cost depends on the rows, not on the texts: perturbed real vectors stand in for 100k texts
    rng = np.random.default_rng(seed)
    reps = -(-rows // len(base))
    emb = np.tile(base, (reps, 1))[:rows] + rng.normal(0, 0.05, (rows, base.shape[1])).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    queries = min(rows, 5_000)
    t0 = time.perf_counter()
    nearest_neighbours(emb[:queries], emb, k=10, block_rows=2048)
    slice_s = time.perf_counter() - t0
    search_s = slice_s * rows / queries
    return {
        "embed_texts_per_s_minilm_1_thread": round(per_s, 1),
        "embed_seconds_100k_extrapolated": round(100_000 / per_s),
        "embed_seconds_1m_extrapolated": round(1_000_000 / per_s),
        "search_rows": rows,
        "search_queries_measured": queries,
        "search_seconds_measured": round(slice_s, 1),
        "search_seconds_full_extrapolated": round(search_s, 1),
        "search_seconds_1m_extrapolated_quadratic": round(search_s * (1_000_000 / rows) ** 2),
        "load_average_1m": round(os.getloadavg()[0], 1),
        "note": "2 shared cores (loaded: see load_average_1m); exact blocked matmul search is O(n^2), "
        "so 1M rows is extrapolated, not run: at that size an ANN index (faiss-cpu) is needed",
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["quality", "combined", "speed"])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--leaks", type=int, default=400)
    parser.add_argument("--copies", type=int, default=560)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--only", choices=["dedup"], help="quality: rerun dedup/outliers, keep decontam rows")
    parser.add_argument("--model", choices=["minilm", "static"], default="minilm")
    args = parser.parse_args()
    previous = json.loads(OUT.read_text()) if OUT.is_file() else {}
    key = args.what if args.model == "minilm" or args.what == "speed" else f"{args.what}_{args.model}"
    if args.what == "quality":
        part = quality(args.seed, args.leaks, args.copies, args.only, previous.get(key), model=args.model)
    elif args.what == "combined":
        part = combined(args.seed, args.leaks, args.copies, args.model)
    else:
        part = speed(args.rows, args.seed)
    results = json.loads(OUT.read_text()) if OUT.is_file() else {}  # re-read: another part may have run
    results[key] = part
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
