// check.mjs reads a HomeMole dataset object (Arrow IPC file) with the
// apache-arrow package and a `homemole dataset export` Parquet file with
// DuckDB, and prints what each reader found as one JSON object on stdout:
//
//   { "arrow":   { "metadata": {...}, "windows": [{ "id", "n_packets", "labels" }] },
//     "parquet": { "labels_vocabulary": [...], "windows": [...] } }
//
// labels hold every slot of a window, padding (-1) included, as the Go
// reader returns them. A Go test (services/homemole/full/dataset_export_test.go)
// compares this with the Go reader; run `npm ci` here first.
//
// Usage: node check.mjs OBJECT.arrow EXPORT.parquet
import { readFileSync } from 'node:fs';
import { tableFromIPC } from 'apache-arrow';
import { DuckDBInstance } from '@duckdb/node-api';

const [arrowPath, parquetPath] = process.argv.slice(2);
if (!arrowPath || !parquetPath) {
  console.error('usage: node check.mjs OBJECT.arrow EXPORT.parquet');
  process.exit(2);
}

function readArrow(path) {
  const table = tableFromIPC(readFileSync(path));
  const ids = table.getChild('window_id');
  const lens = table.getChild('n_packets');
  const labels = table.getChild('label');
  if (!ids || !lens || !labels) {
    throw new Error(`${path}: no window_id, n_packets or label column; is it a HomeMole dataset object?`);
  }
  const windows = [];
  for (let i = 0; i < table.numRows; i++) {
    windows.push({ id: ids.get(i), n_packets: lens.get(i), labels: Array.from(labels.get(i).toArray(), Number) });
  }
  return { metadata: Object.fromEntries(table.schema.metadata), windows };
}

async function readParquet(path) {
  const db = await DuckDBInstance.create(':memory:');
  const con = await db.connect();
  try {
    // One thread keeps the rows in file order.
    await con.run('SET threads = 1');
    const rows = (await con.runAndReadAll(
      'SELECT window_id, n_packets, label FROM read_parquet($1)', [path])).getRowObjectsJson();
    const kv = (await con.runAndReadAll(
      "SELECT decode(value) AS v FROM parquet_kv_metadata($1) WHERE decode(key) = 'homemole.labels'", [path])).getRowObjectsJson();
    if (kv.length !== 1) {
      throw new Error(`${path}: no homemole.labels key-value metadata; was it written by \`homemole dataset export\`?`);
    }
    return {
      labels_vocabulary: JSON.parse(kv[0].v),
      windows: rows.map((r) => ({ id: r.window_id, n_packets: Number(r.n_packets), labels: r.label.map(Number) })),
    };
  } finally {
    con.closeSync();
    db.closeSync();
  }
}

const out = { arrow: readArrow(arrowPath), parquet: await readParquet(parquetPath) };
process.stdout.write(JSON.stringify(out) + '\n');
