"""Reads the warehouse files the router wrote with DuckDB and prints the answers as one JSON
object: rows per (source, date), rows and distinct leads, and the three example queries of
docs/warehouse.md (as text tables).

    python scripts/warehouse_query.py DIR s3        # DIR/source=<s>/date=<d>/*.jsonl
    python scripts/warehouse_query.py DIR firehose  # DIR/YYYY/MM/DD/HH/<objects>

The tests download what the router wrote (to moto's S3) into DIR, run this, and compare.
"""

import json
import sys

import duckdb


def main(directory, layout):
    if layout == "s3":
        # The partition columns come from the path, as Athena's partition projection reads them.
        source = f"read_json_auto('{directory}/**/*.jsonl', hive_partitioning = true, union_by_name = true)"
    else:
        source = f"read_json_auto('{directory}/**/*', union_by_name = true)"
    con = duckdb.connect()
    con.sql(f"CREATE VIEW raw AS SELECT * FROM {source}")
    # Firehose delivers at least once: one row per lead version (docs/warehouse.md).
    con.sql("""CREATE VIEW leads AS SELECT * EXCLUDE (rn) FROM (
                 SELECT *, row_number() OVER (PARTITION BY id, version ORDER BY received_at) AS rn FROM raw)
               WHERE rn = 1""")
    counts = con.sql("""SELECT coalesce(CAST(source AS VARCHAR), '') AS source, CAST(date AS VARCHAR) AS date,
                               count(*) AS n FROM raw GROUP BY ALL ORDER BY ALL""").fetchall()
    rows, distinct = con.sql("SELECT count(*), count(DISTINCT id || ':' || version) FROM raw").fetchall()[0]
    queries = {
        "leads per source per day": """SELECT source, date, count(*) AS leads
            FROM leads GROUP BY source, date ORDER BY date, source""",
        "share of leads per destination": """SELECT d AS destination, count(*) AS leads,
                round(100.0 * count(*) / (SELECT count(*) FROM leads), 1) AS pct
            FROM (SELECT unnest(destinations) AS d FROM leads) GROUP BY d ORDER BY leads DESC, d""",
        "score distribution": """SELECT CAST(floor(lead.icp_score / 10) * 10 AS INTEGER) AS score_from,
                count(*) AS leads
            FROM leads WHERE lead.icp_score IS NOT NULL GROUP BY score_from ORDER BY score_from""",
    }
    print(json.dumps({
        "counts": [[s, d, n] for s, d, n in counts],
        "rows": rows,
        "distinct": distinct,
        "queries": {name: str(con.sql(q)) for name, q in queries.items()},
    }))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
