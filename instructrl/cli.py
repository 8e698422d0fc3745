"""`instructrl`: one entry point, one subcommand per stage.

    instructrl <stage> [config.yaml ...] [key=value ...] [--print-config]

User errors (bad records, config keys, missing models) print one line per problem, no
traceback, and exit 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from instructrl import __version__
from instructrl.config import (
    DBConfig,
    EvalConfig,
    GenerateConfig,
    ImportConfig,
    LabelConfig,
    PPOConfig,
    RMConfig,
    RunConfig,
    ScoreConfig,
    ServeConfig,
    SFTConfig,
    fields_of,
    load_config,
    merge_config,
    set_direct,
)
from instructrl.errors import UserError
from instructrl.records import KINDS


def _keys_epilog(cls: type) -> str:
    rows = fields_of(cls)
    width = max(len(k) for k, *_ in rows)
    lines = ["config keys (key=value, or in a YAML file; nested keys with dots):"]
    for key, tname, default, help_text in rows:
        lines.append(f"  {key:<{width}}  {help_text} [{tname}, default: {default!r}]")
    return "\n".join(lines)


def _stage_parser(
    sub, name: str, cls: type, help_text: str, positionals: tuple[str, ...] = ()
) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog=_keys_epilog(cls),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for positional in positionals:
        p.add_argument(positional)
    p.add_argument(
        "args", nargs="*", metavar="config.yaml|key=value", help="YAML config files and overrides"
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(config_cls=cls)
    return p


def _with_config(
    args: argparse.Namespace, direct: dict[str, Any], run: Callable[[Any], Any]
) -> int:
    if args.print_config:
        from omegaconf import OmegaConf

        merged = set_direct(merge_config(args.config_cls, args.args), direct)
        sys.stdout.write(OmegaConf.to_yaml(merged))
        return 0
    cfg = load_config(args.config_cls, args.args, direct)
    out = run(cfg)
    if out is not None:
        logging.getLogger("instructrl").info("wrote %s", out)
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from instructrl.stages import generate

    return _with_config(args, {"prompt": args.prompt, "prompts": args.prompts_file}, generate.run)


def _cmd_label(args: argparse.Namespace) -> int:
    if args.agreement:
        from instructrl.labelers import calibration_agreement

        result = calibration_agreement(args.input, seed=args.seed or 0)
        if args.json:
            print(json.dumps(result))
        else:
            for group, r in result.items():
                print(
                    f"{group:8s} agreement {100 * r['agreement']:.1f} % "
                    f"(95 % CI {100 * r['ci95'][0]:.1f}-{100 * r['ci95'][1]:.1f}, {r['pairs']} pairs, {r['prompts']} prompts)"
                )
            print("paper: 72.6 +- 1.5 % (training labelers), 77.3 +- 1.3 % (held-out labelers)")
        return 0
    from instructrl.stages import label

    direct = {
        "panel": args.panel,
        "task": args.task,
        "input": args.input,
        "out": args.out,
        "seed": args.seed,
    }
    return _with_config(args, direct, label.run)


def _cmd_stage(args: argparse.Namespace) -> int:
    import importlib

    stage = importlib.import_module(f"instructrl.stages.{args.stage_module}")
    return _with_config(args, {}, getattr(stage, args.stage_func))


def _cmd_import(args: argparse.Namespace) -> int:
    from instructrl import importers

    return _with_config(args, {"format": args.format, "source": args.source}, importers.run)


def _cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from instructrl import pipeline

    console = Console(stderr=True)

    def go(cfg):
        eval_dir = pipeline.run(cfg, console=console)
        state = pipeline.processes()
        if state is not None and not state.is_main_process:
            return eval_dir  # one summary, from the main process
        table = Table(title=f"instructrl run {cfg.name}: headline figures")
        table.add_column("figure")
        table.add_column("value", justify="right")
        for name, value in pipeline.headline(eval_dir):
            table.add_row(name, value)
        console.print(table)
        console.print(f"report: [bold]{eval_dir / 'report.html'}[/bold]")
        return eval_dir

    return _with_config(args, {}, go)


def _load_run(root: Path) -> tuple[dict, Path, dict | None]:
    """(summary, eval directory, run info or None) of a run directory or an eval directory."""
    eval_dir = root if (root / "summary.json").is_file() else root / "eval"
    if not (eval_dir / "summary.json").is_file():
        raise UserError(
            f"report: {root}: expected summary.json there or in {root / 'eval'} "
            "(written by instructrl eval / run)"
        )
    summary = json.loads((eval_dir / "summary.json").read_text())
    run = None
    stages = eval_dir.parent / "stages.json"
    if eval_dir != root or stages.is_file():
        from omegaconf import OmegaConf

        config = eval_dir.parent / "config.yaml"
        resolved = OmegaConf.load(config) if config.is_file() else {}
        rows = json.loads(stages.read_text()) if stages.is_file() else []
        run = {
            "name": resolved.get("name", eval_dir.parent.name),
            "seed": resolved.get("seed", "?"),
            "config": f"`{config}`",
            "wall_s": sum(r.get("wall_s", 0.0) for r in rows),
        }
    return summary, eval_dir, run


def _cmd_report(args: argparse.Namespace) -> int:
    """Re-render report.html from a run's (or an eval directory's) summary.json; print the
    headline figures as Markdown; write them into a README between its markers. Several run
    directories (one config, several seeds): one table, a row per seed, with each claim's verdict."""
    from instructrl import report

    loaded = [_load_run(Path(d)) for d in args.dir]
    if len(loaded) > 1:
        text = report.seeds_markdown(
            [
                (run or {"name": str(d), "seed": "?"}, summary)
                for (summary, _, run), d in zip(loaded, args.dir, strict=True)
            ]
        )
        markers = (report.SEEDS_BEGIN, report.SEEDS_END)
    else:
        summary, eval_dir, run = loaded[0]
        text = report.markdown(summary, run)
        markers = (report.README_BEGIN, report.README_END)
    if args.readme:
        readme = Path(args.readme)
        try:
            readme.write_text(report.replace_block(readme.read_text(), text, *markers))
        except (OSError, ValueError) as e:
            raise UserError(f"report: {readme}: {e}") from None
        print(f"wrote the figures into {readme}", file=sys.stderr)
    if args.markdown or (len(loaded) > 1 and not args.readme):
        print(text, end="")
    if len(loaded) == 1 and not args.markdown and not args.readme:
        print(report.render(summary, eval_dir))
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from instructrl.records import read_records, summarize

    records = read_records(args.file, args.kind)
    print(summarize(args.file, records))
    return 0


def _cmd_data_stats(args: argparse.Namespace) -> int:
    from instructrl import data

    stats = data.stats()
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"shipped data: {stats['prompts']} prompts, {stats['adversarial_prompts']} adversarial"
    )
    table.add_column("category")
    table.add_column("prompts", justify="right")
    table.add_column("share", justify="right")
    for category, n in stats["by_category"].items():
        table.add_row(category, str(n), f"{100 * n / stats['prompts']:.1f} %")
    console = Console()
    console.print(table)
    console.print("splits: " + ", ".join(f"{k} {v}" for k, v in stats["by_split"].items()))
    console.print(
        f"constraints: {stats['constrained_prompts']} prompts, {stats['constraint_kinds']} kinds"
    )
    console.print(
        f"held-out text: {stats['heldout_text_documents']} documents, {stats['heldout_text_tokens']:,} tokens"
    )
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from instructrl.web import commands

    return _with_config(args, {}, commands.serve)


def _cmd_db(args: argparse.Namespace) -> int:
    from instructrl.web import commands

    return _with_config(args, {}, getattr(commands, args.db_command))


def _cmd_users_add(args: argparse.Namespace) -> int:
    from instructrl.web import commands

    def go(cfg):
        commands.add_user(
            cfg,
            username=args.username,
            admin=args.admin,
            group=args.group,
            candidate=args.candidate,
            invite=args.invite,
            password_stdin=args.password_stdin,
        )

    return _with_config(args, {}, go)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="instructrl",
        description="The InstructGPT loop: feedback -> SFT -> reward model -> PPO-ptx -> evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"instructrl {__version__}")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="only warnings and errors on stderr"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    p = _stage_parser(
        sub, "generate", GenerateConfig, "sample completions from a policy (sample records, JSONL)"
    )
    p.add_argument("--prompt", help="one prompt text (same as prompt=TEXT)")
    p.add_argument(
        "--prompts",
        dest="prompts_file",
        metavar="FILE.jsonl",
        help="prompt records (same as prompts=FILE)",
    )
    p.set_defaults(func=_cmd_generate)

    p = _stage_parser(
        sub, "sft", SFTConfig, "supervised fine-tuning on demonstrations (paper step 1)"
    )
    p.set_defaults(func=_cmd_stage, stage_module="sft", stage_func="run")

    p = _stage_parser(
        sub,
        "rm",
        RMConfig,
        "reward model on K-way rankings, normalised on demonstrations (paper step 2)",
    )
    p.set_defaults(func=_cmd_stage, stage_module="reward", stage_func="run")

    p = _stage_parser(
        sub,
        "import",
        ImportConfig,
        "records from a datasets folder / Parquet / JSON, a Label Studio or an Argilla export",
        positionals=("format", "source"),
    )
    p.set_defaults(func=_cmd_import)

    p = _stage_parser(
        sub, "score", ScoreConfig, "add a `reward` field to sample or demonstration records"
    )
    p.set_defaults(func=_cmd_stage, stage_module="reward", stage_func="run_score")

    p = _stage_parser(
        sub,
        "ppo",
        PPOConfig,
        "PPO(-ptx) against the reward model with a per-token KL penalty (paper step 3)",
    )
    p.set_defaults(func=_cmd_stage, stage_module="ppo", stage_func="run")

    p = _stage_parser(
        sub,
        "eval",
        EvalConfig,
        "win rates, Likert, metadata, constraints, truthfulness, harm, perplexity; report.html",
    )
    p.set_defaults(func=_cmd_stage, stage_module="evaluate", stage_func="run")

    p = _stage_parser(
        sub,
        "run",
        RunConfig,
        "the whole loop: demonstrations, SFT, rankings, RM, PPO and PPO-ptx, evaluation",
    )
    p.set_defaults(func=_cmd_run)

    p = _stage_parser(
        sub,
        "label",
        LabelConfig,
        "simulated labelers: demonstrations, rankings, ratings, agreement",
    )
    p.add_argument(
        "--panel", choices=["train", "heldout"], help="labeler group (same as panel=...)"
    )
    p.add_argument(
        "--task",
        choices=["demonstrate", "rank", "rate"],
        help="what the panel does (same as task=...)",
    )
    p.add_argument("--input", help="input JSONL (same as input=...)")
    p.add_argument("--out", help="output JSONL (same as out=...)")
    p.add_argument("--seed", type=int, help="panel seed (same as seed=...)")
    p.add_argument(
        "--agreement",
        action="store_true",
        help="report pairwise agreement within each labeler group",
    )
    p.add_argument("--json", action="store_true", help="with --agreement: print JSON")
    p.set_defaults(func=_cmd_label)

    p = sub.add_parser(
        "report",
        help="report.html again from summary.json; the headline figures as Markdown",
        description="Re-render DIR's report.html from its summary.json (DIR: a run directory "
        "or an eval directory), or print the headline figures, with date, machine and config, "
        "as Markdown. With several DIRs (one config under several seeds): a table with a row "
        "per seed and how many seeds reproduce each claim.",
    )
    p.add_argument(
        "dir",
        metavar="DIR",
        nargs="+",
        help="a run or eval directory; several: one config's runs under different seeds, "
        "compared in one Markdown table",
    )
    p.add_argument("--markdown", action="store_true", help="print the figures as Markdown")
    p.add_argument(
        "--readme",
        metavar="FILE",
        help="write the Markdown into FILE between its '<!-- instructrl report --markdown: "
        "begin/end -->' markers (several DIRs: the '--seeds: begin/end' markers)",
    )
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser(
        "validate",
        help="check a JSONL file the way every stage reads it",
        description="Check a records file: exit 0 with a summary, or 2 with path:line errors.",
    )
    p.add_argument("file", metavar="FILE")
    p.add_argument(
        "--kind", choices=KINDS, help="record kind (inferred from the fields when not given)"
    )
    p.set_defaults(func=_cmd_validate)

    p = _stage_parser(
        sub,
        "serve",
        ServeConfig,
        "the feedback web app: labelers write, rate and rank; admins manage and export",
    )
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("db", help="the feedback database: upgrade the schema, export records")
    db_sub = p.add_subparsers(dest="db_command", required=True, metavar="command")
    q = _stage_parser(db_sub, "upgrade", DBConfig, "create or migrate the schema (Alembic)")
    q.set_defaults(func=_cmd_db, db_command="upgrade")
    q = _stage_parser(
        db_sub,
        "export",
        DBConfig,
        "write a project's demonstrations, comparisons, ratings and prompts as JSONL",
    )
    q.set_defaults(func=_cmd_db, db_command="export")

    p = sub.add_parser("users", help="accounts of the feedback web app")
    users_sub = p.add_subparsers(dest="users_command", required=True, metavar="command")
    q = _stage_parser(
        users_sub, "add", DBConfig, "add an admin or a labeler", positionals=("username",)
    )
    q.add_argument("--admin", action="store_true", help="may manage projects, people and exports")
    q.add_argument(
        "--group", choices=["training", "heldout"], default="training", help="labeler group"
    )
    q.add_argument(
        "--candidate", action="store_true", help="sees only screening tasks until accepted"
    )
    q.add_argument(
        "--invite", action="store_true", help="no password: print an invite link instead"
    )
    q.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    q.set_defaults(func=_cmd_users_add)

    p = sub.add_parser("data", help="the shipped default data")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="command")
    q = data_sub.add_parser(
        "stats", help="counts by category, split and constraint kind; held-out text size"
    )
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=_cmd_data_stats)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # key=value overrides may come after flags (`--prompt X n=3`): gather the leftovers
    args, rest = parser.parse_known_args(argv)
    unknown = [a for a in rest if a.startswith("-") or not hasattr(args, "args")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if rest:
        args.args = [*args.args, *rest]
    from rich.console import Console
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(message)s",
        # logs on stderr: stdout stays clean for records (generate prints JSONL there)
        handlers=[RichHandler(console=Console(stderr=True), show_path=False, show_time=False)],
        force=True,
    )
    for noisy in ("httpx", "urllib3", "filelock", "matplotlib", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("accelerate").setLevel(
        logging.ERROR
    )  # "removed shared tensor" on tied weights
    try:
        return args.func(args)
    except UserError as e:
        for line in str(e).splitlines():
            print(f"instructrl: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("instructrl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
