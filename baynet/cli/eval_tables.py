"""The tables ``baynet eval …`` prints (kept apart from the commands, which read and run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


def _print_matrix(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from baynet.lab.degrade import SHAPES

    table = Table(title="Accuracy by data shape: Baynet AC@1 (Avg@5) | best simple baseline AC@1 (random)")
    table.add_column("shape")
    meshes = list(result["matrix"])
    for mesh in meshes:
        table.add_column(mesh)
    for shape in SHAPES:
        cells = []
        for mesh in meshes:
            cell = result["matrix"][mesh].get(shape)
            if cell is None:
                cells.append(f"excluded: {result['excluded'][mesh].get(shape, '')[:40]}")
                continue
            mark = "" if cell["AC@1"] > cell["best_baseline_AC@1"] else " !"
            cells.append(f"{cell['AC@1']:.2f} ({cell['Avg@5']:.2f}) | {cell['best_baseline']} "
                         f"{cell['best_baseline_AC@1']:.2f} ({cell['random_AC@1']:.2f}){mark}")
        table.add_row(shape, *cells)
    Console().print(table)
    typer.echo("'!': Baynet does not beat the best simple baseline of that cell")


def _print_by_field(parts: dict[str, dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    for field, values in parts.items():
        table = Table(title=f"By truth.json field {field!r}: Baynet against the simple baselines (AC@1)")
        methods = sorted({m for v in values.values() for m in v["baselines"]})
        for col in (field, "n", "Baynet AC@1 (Avg@5)", *methods):
            table.add_column(col)
        for value, v in values.items():
            table.add_row(value, str(v["n"]), f"{v['AC@1']:.2f} ({v['Avg@5']:.2f})",
                          *(f"{v['baselines'][m]:.2f}" if m in v["baselines"] else "-" for m in methods))
        Console().print(table)


def _print_online(online: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Online (in time order): learning = each true cause confirmed after its ranking; "
                        "static = never")
    for col in ("set", "n", "AC@1 learning/static", "Avg@5 learning/static", "AC@1 1st→2nd half (L | S)"):
        table.add_column(col)
    for name, part in [*online["by_directory"].items(), ("pooled", online)]:
        h = part["halves"]
        table.add_row(Path(name).name or name, str(part["learning"]["n"]),
                      f"{part['learning']['AC@1']:.2f} / {part['static']['AC@1']:.2f}",
                      f"{part['learning']['Avg@5']:.2f} / {part['static']['Avg@5']:.2f}",
                      f"{h['learning'][0]['AC@1']:.2f}→{h['learning'][1]['AC@1']:.2f} | "
                      f"{h['static'][0]['AC@1']:.2f}→{h['static'][1]['AC@1']:.2f}")
    Console().print(table)


def _accuracy_table(title: str, part: dict[str, Any]) -> Any:
    """AC@1/3/5 and Avg@5 of Baynet and each baseline, overall and per fault type, as a rich table."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("method", "scope", "n", "AC@1", "AC@3", "AC@5", "Avg@5"):
        table.add_column(col, justify="left" if col in ("method", "scope") else "right")

    def add(method: str, scope: str, m: dict[str, float]) -> None:
        table.add_row(method, scope, str(m["n"]), *(f"{m[k]:.2f}" for k in ("AC@1", "AC@3", "AC@5", "Avg@5")))

    add("baynet", "overall", part["overall"])
    for t, m in part["by_type"].items():
        add("baynet", t, m)
    for name, b in part["baselines"].items():
        add(name, "overall", b["overall"])
        for t, m in b["by_type"].items():
            add(name, t, m)
    return table


def _print_bundle_eval(result: dict[str, Any]) -> None:
    from rich.console import Console

    table_of = _accuracy_table
    console = Console()
    directories = result.get("by_directory", {})
    for d, part in directories.items():
        console.print(table_of(f"Root-cause accuracy on bundles (service level): {d}", part))
        typer.echo(f"seconds per case: {part['seconds_per_case']:.2f}")
    if len(directories) != 1:
        console.print(table_of("Root-cause accuracy on bundles (service level): all", result))
    typer.echo(f"seconds per case: {result['seconds_per_case']:.2f}; skipped: {len(result['skipped'])}")
    typer.echo("rank of the true service per case (baynet; baselines):")
    for c in result["cases"]:
        others = ", ".join(f"{m} {r or '-'}" for m, r in c["ranks"].items() if m != "baynet")
        typer.echo(f"  {c['case']:<40} {c['truth']:<28} {c['rank'] or '-':>3} of {c['candidates']}  ({others})")
    for s in result["skipped"]:
        typer.echo(f"  skipped {s['case']}: {s['reason']}")


def _print_eval(result: dict[str, Any], title: str, cases_too: bool = True) -> None:
    from rich.console import Console

    Console().print(_accuracy_table(f"Root-cause accuracy (service level): {title}", result))
    if "synthetic" in result:
        _print_eval({**result["synthetic"], "relocated": []}, f"{title}, semi-synthetic (normal traces, one "
                    f"injected fault each)", cases_too=False)
    typer.echo(f"seconds per case: {result['seconds_per_case']:.2f}; skipped: {len(result['skipped'])}; "
               f"re-located: {len(result['relocated'])}")
    if cases_too:
        typer.echo("rank of the true service per case (baynet / baro / microrank, of N candidates):")
        for c in result["cases"]:
            r = c["ranks"]
            typer.echo(f"  {c['case']:<40} {c['truth']:<28} {r['baynet'] or '-':>3} / {r['baro'] or '-':>3} / "
                       f"{r['microrank'] or '-':>3}  of {c['candidates']}")
    for s in result["relocated"]:
        typer.echo(f"  re-located {s['case']}: {s['reason']}")
    for s in result["skipped"]:
        typer.echo(f"  skipped {s['case']}: {s['reason']}")


def _print_compare(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    def cell(s: dict[str, float]) -> str:
        return f"{s['AC@1']:.2f} ({s['Avg@5']:.2f})"

    table = Table(title="AC@1 (Avg@5), before -> after, on the cases both runs hold")
    for col in ("group", "n", "before", "after", ""):
        table.add_column(col)
    rows = [("overall", result["overall"])] + [(f"dir {k}", v) for k, v in result["by_directory"].items()] \
        + list(result["by_type"].items())
    for name, g in rows:
        delta = g["after"]["AC@1"] - g["before"]["AC@1"]
        table.add_row(name, str(g["before"]["n"]), cell(g["before"]), cell(g["after"]),
                      "LOST" if g["lost"] else (f"+{delta:.2f}" if delta > 0 else ""))
    Console().print(table)
    for m in result["moved"]:
        typer.echo(f"moved: {m['directory'] + '/' if m['directory'] else ''}{m['case']} ({m['fault_type']}, truth "
                   f"{m['truth']}): rank {m['rank_before']} -> {m['rank_after']}; top 1 {m['top1_before']} -> "
                   f"{m['top1_after']}")
    for side in ("only_before", "only_after"):
        if result[side]:
            typer.echo(f"{side.replace('_', ' ')} (not scored): {', '.join(result[side])}")
    typer.echo(f"{len(result['moved'])} case(s) moved; AC@1 fell in: {', '.join(result['lost']) or 'none'}")
