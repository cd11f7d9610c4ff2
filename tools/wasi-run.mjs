// Runs a wasm32-wasip1 test binary under Node's WASI, so the core's unit
// tests execute compiled to the same target as the filter Envoy loads.
// Used as the cargo runner: CARGO_TARGET_WASM32_WASIP1_RUNNER="node tools/wasi-run.mjs"
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';
import { argv, env, exit } from 'node:process';

const [, , wasmPath, ...args] = argv;
const wasi = new WASI({ version: 'preview1', args: [wasmPath, ...args], env, returnOnExit: true });
const module = await WebAssembly.compile(await readFile(wasmPath));
// The lib also holds the filter glue, which imports Proxy-Wasm host calls
// from "env". Tests never call them: any call traps loudly.
const hostStub = new Proxy({}, {
  get: (_, name) => () => { throw new Error(`proxy-wasm host call ${String(name)} in a core test`); },
});
const imports = { ...wasi.getImportObject(), env: hostStub };
const instance = await WebAssembly.instantiate(module, imports);
// The filter's reactor entry point (`_initialize`) sits beside the test
// harness's `_start`; WASI refuses both, so expose only what a command needs.
const { _start, memory } = instance.exports;
exit(wasi.start({ exports: { _start, memory } }));
