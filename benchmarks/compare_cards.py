"""Compare the cards of the same entries in two zoo roots, metric by metric (e.g. before and after republishing).

    python benchmarks/compare_cards.py ROOT_A ROOT_B [--names a b ...] [--json out.json]

For each entry in both roots: its headline metric in each, how many metrics differ and the largest absolute
difference among them (a few-shot {mean, ci95} counts as two numbers), and the int8 gate's fp32 and int8
figures in each. Prints a Markdown table.
"""

import argparse
import json
from pathlib import Path

from zoo import protocols, registry


def numbers(metrics, prefix="") -> dict:
    """{dotted name: value} of every number in a card's metrics."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(numbers(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[prefix + key] = float(value)
    return out


def compare(card_a, card_b) -> dict:
    a, b = numbers(card_a.metrics), numbers(card_b.metrics)
    differ = {k: abs(a[k] - b[k]) for k in set(a) & set(b) if a[k] != b[k]}
    int8 = [(c.int8 or {}).get(k) for c in (card_a, card_b) for k in ("fp32", "int8")]
    return {"headline": card_a.primary_metric, "a": protocols.headline(card_a), "b": protocols.headline(card_b),
            "metrics": len(set(a) | set(b)), "differ": len(differ), "only_in_one": len(set(a) ^ set(b)),
            "max_abs_diff": max(differ.values(), default=0.0), "int8": int8}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root_a")
    parser.add_argument("root_b")
    parser.add_argument("--names", nargs="*", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    names = args.names or sorted(set(registry.list_models(args.root_a)) & set(registry.list_models(args.root_b)))
    rows = {n: compare(registry.info(n, args.root_a), registry.info(n, args.root_b)) for n in names}
    print(f"| entry | headline | {args.root_a} | {args.root_b} | metrics differing | largest difference "
          "| int8 gate fp32 / int8 (a) | (b) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for n, r in rows.items():
        f = [("-" if v is None else f"{v:.4f}") for v in r["int8"]]
        print(f"| `{n}` | {r['headline']} | {r['a']:.4f} | {r['b']:.4f} | {r['differ']} of {r['metrics']} "
              f"| {r['max_abs_diff']:.2e} | {f[0]} / {f[1]} | {f[2]} / {f[3]} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
