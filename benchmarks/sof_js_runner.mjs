// The reference runner (sof-js) over NDJSON for benchmarks/tables.py:
//   node sof_js_runner.mjs SOF_JS_DIR VIEW.json INPUT.ndjson
// evaluates the view over batches of 1,000 resources (evaluate() validates the view on every
// call: once per resource would measure mostly that) and prints the rows made and the
// seconds its loop took (parsing included, node start-up not).
import fs from 'node:fs'
import path from 'node:path'
import readline from 'node:readline'
import { pathToFileURL } from 'node:url'

const [dir, viewFile, input] = process.argv.slice(2)
const { evaluate } = await import(pathToFileURL(path.join(dir, 'src', 'index.js')).href)
const view = JSON.parse(fs.readFileSync(viewFile, 'utf8'))
const lines = readline.createInterface({ input: fs.createReadStream(input), crlfDelay: Infinity })
let rows = 0
let batch = []
const started = process.hrtime.bigint()
for await (const line of lines) {
  if (line.trim()) batch.push(JSON.parse(line))
  if (batch.length === 1000) {
    rows += evaluate(view, batch, false).length
    batch = []
  }
}
if (batch.length) rows += evaluate(view, batch, false).length
const seconds = Number(process.hrtime.bigint() - started) / 1e9
console.log(JSON.stringify({ rows, seconds }))
