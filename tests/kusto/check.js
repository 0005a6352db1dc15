// Analyse Kusto queries with Microsoft's Kusto language service (npm @kusto/language-service-next, the
// Kusto.Language parser and semantic analyser compiled to JavaScript). One process for every query.
//
//   node check.js PACKAGE_DIR < request.json > diagnostics.json
//
// request:  {"databases": {"NAME": {"TABLE": {"COLUMN": "kusto type", ...}, ...}, ...},
//            "queries": [{"id": "...", "database": "NAME", "text": "..."}, ...]}
// answer:   [{"id": "...", "diagnostics": [{"severity", "code", "message", "start", "length"}, ...]}, ...]
// Every diagnostic the analyser reports is returned (errors, warnings, suggestions); the caller decides.
"use strict";
const fs = require("fs");
const path = require("path");

const pkg = path.resolve(process.argv[2] || ".");
require(path.join(pkg, "bridge.js"));
require(path.join(pkg, "Kusto.Language.Bridge.js"));
const K = global.Kusto.Language;

const request = JSON.parse(fs.readFileSync(0, "utf8"));
const quote = (name) => "['" + name.replace(/\\/g, "\\\\").replace(/'/g, "\\'") + "']";
const globals = {};
for (const [dbName, tables] of Object.entries(request.databases)) {
  const symbols = Object.entries(tables).map(([table, columns]) => {
    const schema = "(" + Object.entries(columns).map(([c, t]) => quote(c) + ":" + t).join(", ") + ")";
    return new K.Symbols.TableSymbol.$ctor7(table, schema, null);
  });
  const db = new K.Symbols.DatabaseSymbol.ctor(dbName, symbols);
  globals[dbName] = K.GlobalState.Default.WithDatabase(db);
}

const out = request.queries.map((q) => {
  const g = globals[q.database];
  if (!g) throw new Error("unknown database " + q.database);
  const code = K.KustoCode.ParseAndAnalyze(q.text, g);
  const diagnostics = Bridge.toArray(code.GetDiagnostics()).map((d) => ({
    severity: d.Severity, code: d.Code, message: d.Message, start: d.Start, length: d.Length,
  }));
  return { id: q.id, diagnostics };
});
process.stdout.write(JSON.stringify(out));
