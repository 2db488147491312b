"""Where one model beats another, token by token: NLL improvement by position in the
document, by training-frequency bucket and by earlier occurrences in the document, and
the documents with the biggest gains. Both inputs must score the same tokens."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fwl_jax.eval.results import load_tokens  # noqa: E402


def _check_same_tokens(a: dict, b: dict) -> None:
    for key in ("doc_index", "position", "token"):
        if a[key].shape != b[key].shape or not np.array_equal(a[key], b[key]):
            raise ValueError("the two results do not score the same tokens (another split, "
                             "tokenizer or document limit); compare runs of the same data.")


def _bucketed(values: np.ndarray, gain: np.ndarray, edges: list[int]):
    """Mean gain and token count per bucket [edges[i], edges[i+1])."""
    index = np.searchsorted(edges, values, side="right") - 1
    means, counts = [], []
    for i in range(len(edges) - 1):
        chosen = index == i
        counts.append(int(chosen.sum()))
        means.append(float(gain[chosen].mean()) if chosen.any() else float("nan"))
    return means, counts


def _label(edges: list[int], i: int) -> str:
    low, high = edges[i], edges[i + 1] - 1
    return f"{low}" if low == high else (f"{low}+" if i == len(edges) - 2 else f"{low}-{high}")


def _figure(path: Path, title: str, xlabel: str, labels, means, counts, names) -> None:
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    positions = np.arange(len(labels))
    ax.bar(positions, means, color=["tab:green" if m >= 0 else "tab:red" for m in means])
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(positions, labels, rotation=30, ha="right")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"NLL({names[0]}) - NLL({names[1]}), nats/token")
    ax.set_title(f"{title}: > 0 where {names[1]} is better")
    for x, (m, n) in enumerate(zip(means, counts)):
        if np.isfinite(m):
            ax.annotate(f"n={n}", (x, m), ha="center", va="bottom" if m >= 0 else "top",
                        fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def compare(path_a: Path, path_b: Path, out_dir: Path, names=("A", "B"),
            top_documents: int = 10) -> dict:
    """Writes three PNG figures and `gains.json` to `out_dir`; returns their summary."""
    a, b = load_tokens(path_a), load_tokens(path_b)
    _check_same_tokens(a, b)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    gain = a["nll"].astype(np.float64) - b["nll"].astype(np.float64)
    max_position = int(a["position"].max(initial=0)) + 1
    axes = {
        "position": ("by position in the document", "position of the token in its document",
                     a["position"], [0] + [2 ** k for k in range(4, 40)
                                           if 2 ** k < max_position] + [max_position]),
        "frequency": ("by training-set frequency", "occurrences of the token in training",
                      a["train_frequency"], [0, 1, 10, 100, 1000, 10000, 100000,
                                             max(int(a["train_frequency"].max(initial=0)) + 1,
                                                 100001)]),
        "repetition": ("by earlier occurrences in the document",
                       "times the token already occurred in the document",
                       a["prior_occurrences"], [0, 1, 2, 3, 5, 10, 20,
                                                max(int(a["prior_occurrences"].max(initial=0)) + 1, 21)]),
    }
    summary = {"names": list(names), "tokens": int(len(gain)),
               "mean_gain": float(gain.mean()) if len(gain) else float("nan"), "figures": {}}
    for key, (title, xlabel, values, edges) in axes.items():
        means, counts = _bucketed(values, gain, edges)
        labels = [_label(edges, i) for i in range(len(edges) - 1)]
        path = out_dir / f"gain_by_{key}.png"
        _figure(path, f"NLL gain {title}", xlabel, labels, means, counts, names)
        summary["figures"][key] = {"path": str(path), "buckets": labels, "mean_gain": means,
                                   "tokens": counts}
    docs = np.unique(a["doc_index"])
    per_doc = [(float(gain[a["doc_index"] == d].mean()), int(d)) for d in docs]
    per_doc.sort(reverse=True)
    summary["top_documents"] = [
        {"doc_id": str(a["doc_ids"][d]), "mean_gain": g,
         "tokens": int((a["doc_index"] == d).sum())} for g, d in per_doc[:top_documents]]
    (out_dir / "gains.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def gains_table(summary: dict) -> str:
    """The top documents as a Markdown table."""
    rows = ["| document | tokens | mean NLL gain (nats) |", "|---|---|---|"]
    rows += [f"| {d['doc_id']} | {d['tokens']} | {d['mean_gain']:+.4f} |"
             for d in summary["top_documents"]]
    return "\n".join(rows)
