"""CLI commands over stored vectors: ``query``, ``index``, ``api``, ``dedup``, ``cluster``.

Each is a thin shell over a library call (``flows.stages.query``, ``store.search``,
``store.dedup``, ``store.cluster``) and, like every command, takes ``--json``. Every answer
names the table version it read.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from flows.cli_report import num
from flows.terminal import terminal_safe


def _store(args):
    from flows.config import open_project

    return open_project(Path(args.project).resolve())[1]


def _cell(value, width: int) -> str:
    text = terminal_safe(value)  # user data: control characters shown, never executed
    return text if len(text) <= width else text[: width - 1] + "…"


def query_table(args) -> str:
    """The table a query reads: ``--table``, else ``--fusion``, else the project's only fusion
    (plait.toml's, else the store's), else ``fused`` when it is one of several."""
    from flows.config import DEFAULT_FUSION, ProjectConfig
    from store.errors import did_you_mean
    from store.errors import ConfigError

    if args.table or args.fusion:
        return args.table or args.fusion
    cfg = ProjectConfig.load(Path(args.project).resolve())
    names = [f.name for f in cfg.fusions]
    if not names:
        from flows.config import open_store
        from store import registries

        names = sorted(r["id"] for r in registries.rows(open_store(cfg), "fusions"))
    if len(names) == 1:
        return names[0]
    if not names or DEFAULT_FUSION in names:
        return DEFAULT_FUSION
    raise ConfigError(f"the project has {len(names)} fusions {names}: which one should the query search?"
                      + did_you_mean(DEFAULT_FUSION, names), fix=f"pass --fusion NAME (one of {names}) or --table TABLE")


def query_columns(text: str) -> tuple[str, ...]:
    """``--columns a,b,a`` → ``("a", "b")``: a column asked for twice is shown once."""
    return tuple(dict.fromkeys(c.strip() for c in text.split(",") if c.strip()))


def cmd_query(args, out) -> int:
    from flows.stages.query import Query, QuerySpace, parse_vector
    from store.search import SearchRequest

    text = args.text_opt if args.text_opt is not None else args.text  # --text "" is a blank text, not none
    query = Query(text=text, image=args.image, id=args.id,
                  vector=parse_vector(args.vector) if args.vector is not None else None)
    query.kind()  # one of the four, before anything loads
    columns = query_columns(args.columns)
    request = SearchRequest(k=args.k, where=args.where, columns=columns, exact=args.exact)  # checks the where
    space = QuerySpace(_store(args), query_table(args), cross_modal=not args.no_cross_modal)
    answer = space.ask(query, request)
    r = answer.result
    how = [f"{r.table}@v{r.version}", r.method]
    if r.filtered_rows is not None:
        how.append(f"{r.filtered_rows} rows match the filter")
    blocks = []
    if answer.used:
        blocks.append("encoded: " + ", ".join(answer.used))
    blocks += [f"{m} <- {why}" for m, why in answer.stand_in.items()]
    if answer.masked:
        blocks.append("masked: " + ", ".join(answer.masked))
    lines = [" · ".join(how) + (f" · {'; '.join(blocks)}" if blocks else "")]
    lines += [f"note: {terminal_safe(n)}" for n in r.notes]
    id_w = max([len(terminal_safe(h.id)) for h in r.hits] + [2]) + 2
    col_w = max(14, 72 // max(len(columns), 1))
    lines.append(f"{'#':>3}  {'id':<{id_w}}{'distance':>9}  " + "  ".join(f"{c:<{col_w}}" for c in columns))
    for rank, h in enumerate(r.hits, 1):
        lines.append(f"{rank:>3}  {terminal_safe(h.id):<{id_w}}{num(h.distance):>9}  "
                     + "  ".join(f"{_cell(h.item.get(c), col_w):<{col_w}}" for c in columns))
    if not r.hits:
        lines.append("  (no matches)")
    out(args, answer.to_dict(), "\n".join(lines))
    return 0


def cmd_index(args, out) -> int:
    from store.index import HnswConfig
    from store.lance_index import IvfPqConfig
    from store.search import VectorSearch

    search = VectorSearch(_store(args), args.table)
    if args.kind == "hnsw":
        config = HnswConfig(m=args.m, ef_construction=args.ef_construction, ef_search=args.ef_search)
    else:
        config = IvfPqConfig(partitions=args.partitions, sub_vectors=args.sub_vectors, nprobes=args.nprobes,
                             refine_factor=args.refine_factor)
    report = search.build_index(args.kind, config, rebuild=args.rebuild)
    recall = num(report.recall_at_10, 3)
    text = (f"{report.table}@v{report.version}: index {report.action} ({args.kind}), {report.rows} rows, "
            f"+{report.added} -{report.removed}, {report.seconds:.2f} s, recall@10 vs exact {recall}\n"
            f"saved to {report.path}")
    from store.search import MIN_INDEX_RECALL

    if report.recall_at_10 is not None and report.recall_at_10 < MIN_INDEX_RECALL:
        text += (f"\nwarning: recall@10 {report.recall_at_10:.3f} is below {MIN_INDEX_RECALL}: queries will search "
                 f"exactly instead of using this index. Rebuild with a larger --m / --ef-construction / --ef-search "
                 f"(vectors with little neighbour structure, like random noise, defeat any graph index).")
    out(args, {**dataclasses.asdict(report), "kind": args.kind}, text)
    return 0


def cmd_api(args, out) -> int:
    import sys

    from flows.api import bind_warning, resolve_api_key, serve

    store = _store(args)
    key = resolve_api_key(args.api_key)
    warning = bind_warning(args.host, key)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    print(f"plait api on http://{args.host}:{args.port}: search page at /, docs at /docs"
          + (" (API key required)" if key else ""), flush=True)
    serve(store, args.host, args.port, api_key=key)
    return 0


def cmd_dedup(args, out) -> int:
    from store.dedup import find_duplicates
    from store.search import resolve_table

    store = _store(args)
    r = find_duplicates(store, resolve_table(store, args.table), args.threshold, args.neighbours)
    lines = [f"{r.table}@v{r.version} ({r.method}): {r.rows} rows, {r.pairs} pairs with cosine >= {r.threshold}, "
             f"{r.groups} groups holding {r.rows_in_groups} rows (largest {r.largest_group}), {r.seconds:.2f} s",
             f"group id per row -> {r.output_table}@v{r.output_version}"]
    lines += ["  " + ", ".join(terminal_safe(x) for x in g) for g in r.examples]
    lines += _removed_meanwhile(r.orphans_removed, "dedup")
    out(args, dataclasses.asdict(r), "\n".join(lines))
    return 0


def cmd_cluster(args, out) -> int:
    from store.cluster import ClusterConfig, cluster
    from store.search import resolve_table

    store = _store(args)
    r = cluster(store, resolve_table(store, args.table),
                ClusterConfig(k=args.k, epochs=args.epochs, silhouette_sample=args.silhouette_sample, seed=args.seed))
    sil = num(r.silhouette, 3)
    lines = [f"{r.table}@v{r.version}: {r.k} clusters over {r.rows} rows in {r.seconds:.2f} s; silhouette (cosine, "
             f"{r.silhouette_sample} sampled rows) {sil}; mean squared distance {r.inertia:.4f}",
             f"cluster id per row -> {r.output_table}@v{r.output_version}; centroids -> "
             f"{r.centroids_table}@v{r.centroids_version}",
             "largest clusters: " + ", ".join(f"#{c} ({r.sizes[c]})" for c in r.largest)]
    lines += _removed_meanwhile(r.orphans_removed, "cluster")
    out(args, dataclasses.asdict(r), "\n".join(lines))
    return 0


def _removed_meanwhile(n: int, command: str) -> list[str]:
    return [f"{n} rows left out: their items were removed while this ran (a prune or drop-source); the counts "
            f"above include them and plait status shows this result as stale until plait {command} runs again"] if n else []


def add_commands(add, out) -> None:
    """Register the commands on the main parser (``add`` makes a subparser with --project/--json)."""
    def bind(fn):
        return lambda args: fn(args, out)

    sp = add("query", bind(cmd_query), "nearest neighbours for a text, an image, an id or a vector")
    sp.add_argument("text", nargs="?", help="a text query (or use --text / --image / --id / --vector)")
    sp.add_argument("--text", dest="text_opt", help="a text query")
    sp.add_argument("--image", help="an image file to query with")
    sp.add_argument("--id", help="an id in the table: its neighbours (itself left out)")
    sp.add_argument("--vector", help="a raw vector: JSON list, comma-separated floats, or a .npy file")
    sp.add_argument("--table", help="a vector table (fused__NAME, emb__…), or a fusion name")
    sp.add_argument("--fusion", help="fusion to query when --table is not given (default: the project's only "
                    "fusion, or 'fused')")
    sp.add_argument("-k", type=int, default=10, help="neighbours to return (1..1000)")
    sp.add_argument("--columns", default="text", help="item columns to show, comma-separated (default text)")
    sp.add_argument("--where", help="SQL filter on item columns, e.g. \"source = 'shop' AND label_group = 'animals'\"")
    sp.add_argument("--exact", action="store_true", help="exact numpy search even when an index exists")
    sp.add_argument("--no-cross-modal", action="store_true",
                    help="mask blocks of the other modality instead of filling them through open_clip")

    sp = add("index", bind(cmd_index), "build or update the ANN index of a vector table; reports recall@10")
    sp.add_argument("table", help="a vector table or a fusion name")
    sp.add_argument("--kind", choices=["hnsw", "ivf_pq"], default="hnsw",
                    help="hnsw: in-memory faiss graph (fast); ivf_pq: LanceDB's on-disk index (small memory)")
    sp.add_argument("--rebuild", action="store_true", help="rebuild instead of updating incrementally")
    sp.add_argument("--m", type=int, default=32, help="HNSW links per node")
    sp.add_argument("--ef-construction", type=int, default=80, help="HNSW build beam width (default 80)")
    sp.add_argument("--ef-search", type=int, default=64, help="HNSW search beam width (default 64)")
    sp.add_argument("--partitions", type=int, help="IVF_PQ partitions (default sqrt(rows))")
    sp.add_argument("--sub-vectors", type=int, help="IVF_PQ sub-vectors (default dim/16)")
    sp.add_argument("--nprobes", type=int, default=32, help="IVF_PQ partitions searched per query (default 32)")
    sp.add_argument("--refine-factor", type=int, default=10,
                    help="IVF_PQ candidates re-ranked exactly, as a multiple of k (default 10)")

    sp = add("api", bind(cmd_api), "serve /search and /items/{id} over HTTP")
    sp.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    sp.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    sp.add_argument("--api-key", help="require this key (X-API-Key header) on every route but /health and the page; "
                    "default $PLAIT_API_KEY (prefer the variable: flags show in ps)")

    sp = add("dedup", bind(cmd_dedup), "near-duplicate groups; stores a group id per row in dedup__TABLE")
    sp.add_argument("table", help="a vector table or a fusion name")
    sp.add_argument("--threshold", type=float, default=0.95, help="cosine similarity for a duplicate pair")
    sp.add_argument("--neighbours", type=int, default=10, help="neighbours looked at per row")

    sp = add("cluster", bind(cmd_cluster), "k-means clusters; stores a cluster id per row and the centroids")
    sp.add_argument("table", help="a vector table or a fusion name")
    sp.add_argument("--k", type=int, default=16, help="number of clusters (default 16)")
    sp.add_argument("--epochs", type=int, default=2, help="passes over the streamed rows (default 2)")
    sp.add_argument("--silhouette-sample", type=int, default=5000,
                    help="rows sampled for the silhouette score (default 5000)")
    sp.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
