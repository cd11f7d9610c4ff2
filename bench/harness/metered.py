"""`bench.py metered` (`make bench-metered`): what the metered path costs
over the header-only path (issue 18's bench rows), side by side in one run.

Three Envoys, one worker each, built like every other bench configuration
(bench/harness/configs.py, from envoy/local/envoy.yaml.tmpl); their
upstream listener answers (once it has the whole request body: Envoy's
buffer filter, as a provider reads the request before it answers),
besides `{"ok":true}`:

  x-bench-response: json     a small OpenAI chat completion (JSON, with `usage`)
  x-bench-response: stream   a 1 MiB OpenAI chat completion stream
                             (text/event-stream: many `data: {...}` chunks
                             with content, a final chunk with `usage`, then
                             `data: [DONE]`), from a file

both Envoy `direct_response`s (no Python server in the measurement).

  bare           no filter but the router
  guard-plain    the guard, the 10-key bench bundle: no key is metered
  guard-metered  the same bundle + a `metered` key (tokens per minute, a
                 budget no run spends) and a `models` key (a model allowlist)

The requests: a small chat request (POST, JSON body naming the model and
`max_tokens`) answered by the small JSON or by the 1 MiB stream, with the
header-only key (`allow`: no model rules, no token limits), the metered key
and the model-rule key; and the plain allow-path request of `make bench`
(GET, no body) on both guard Envoys, so the header-only path is shown
unchanged when another key of the bundle is metered.

Instructions per request under callgrind (harness/callgrind.py, all cases
of one Envoy in one valgrind run); CPU per request with wrk (interleaved
rounds; noisy on a shared machine). Before any figure, a check that the
metered requests were metered (the guard's usage counters grew by the
prompt and completion tokens of every response, the stream's final chunk
included) and the header-only ones were not (no usage counted: their
bodies were not read).

Writes bench/results/metered.md and metered.json (`--smoke`: under
bench/work/metered/ only).
"""

import datetime as dt
import http.client
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from .callgrind import envoy_instructions
from .common import BENCH, PATH, TOOLS_BIN, envoy_binary, log
from .configs import guard_filters
from .envoy import Envoy
from .load import keep_alive_requests, saturation_run, wrk, wrk_post_script
from .plan import Case, auth, make_bundle

MIB = 1 << 20
STREAM_BYTES = MIB
MODEL = "gpt-4o-mini"  # allowed by the `models` key's pattern (bench/tools MODEL_PATTERN)
RESPONSE_MODEL = "gpt-4o-mini-2024-07-18"
PROMPT_TOKENS = 23
SMALL_COMPLETION_TOKENS = 9
SELECT = "x-bench-response"


def chat_request(stream):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Write a long story about a lighthouse."}],
            "max_tokens": 4096}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return json.dumps(body, separators=(",", ":")).encode()


def small_response():
    return json.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1764633600, "model": RESPONSE_MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Once upon a time, a lighthouse.",
                                             "refusal": None}, "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": SMALL_COMPLETION_TOKENS,
                  "total_tokens": PROMPT_TOKENS + SMALL_COMPLETION_TOKENS,
                  "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}},
        "system_fingerprint": "fp_bench",
    }, separators=(",", ":")).encode()


def _chunk(delta, finish=None, usage=None, choices=True):
    event = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1764633600, "model": RESPONSE_MODEL,
             "service_tier": "default", "system_fingerprint": "fp_bench",
             "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}] if choices else [],
             "usage": usage}
    return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"


def stream_response(size=STREAM_BYTES):
    """An OpenAI chat completion stream of exactly `size` bytes, as the API
    sends it with `stream_options.include_usage`: a role chunk, content
    chunks of one token each (`"usage":null`), a finish chunk, the usage
    chunk, `data: [DONE]`. Returns (body, completion tokens)."""
    words = ["Once", " upon", " a", " time", ",", " the", " lighthouse", " keeper", " watched", " the", " sea", "."]
    head = _chunk({"role": "assistant", "content": "", "refusal": None})
    finish = _chunk({}, finish="stop")
    done = b"data: [DONE]\n\n"

    def tail(tokens):
        usage = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": tokens, "total_tokens": PROMPT_TOKENS + tokens,
                 "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                 "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                               "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}
        return finish + _chunk({}, usage=usage, choices=False) + done

    body = [head]
    length = len(head)
    tokens = 0
    while True:
        piece = _chunk({"content": words[tokens % len(words)]})
        # Room for this chunk, the tail and one more chunk to pad into.
        if length + len(piece) + len(tail(tokens + 2)) + len(piece) + 40 > size:
            break
        body.append(piece)
        length += len(piece)
        tokens += 1
    # The last content chunk is padded to fill the size exactly.
    gap = size - length - len(tail(tokens + 1)) - len(_chunk({"content": ""}))
    if gap < 0:
        raise SystemExit(f"bench: cannot build a {size}-byte stream")
    body.append(_chunk({"content": "~" * gap}))
    tokens += 1
    body.append(tail(tokens))
    out = b"".join(body)
    if len(out) != size:
        raise SystemExit(f"bench: the stream is {len(out)} bytes, not {size}")
    return out, tokens


def upstream_tweak(stream_file, small_file):
    """More upstream routes (the two canned answers, selected by a request
    header), the direct_response body limit raised for the 1 MiB one, and
    a longer route timeout (a 1 MiB answer under callgrind is slow)."""

    def tweak(config):
        listeners = {x["name"]: x for x in config["static_resources"]["listeners"]}
        up_hcm = listeners["upstream"]["filter_chains"][0]["filters"][0]["typed_config"]
        # The upstream answers once it has the whole request body, as a
        # provider does (a direct_response alone answers on the headers: the
        # answer could then end the stream before the guard saw the body).
        up_hcm["http_filters"][:0] = [{"name": "envoy.filters.http.buffer", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
            "max_request_bytes": 65536}}]
        up = up_hcm["route_config"]
        up["max_direct_response_body_size_bytes"] = STREAM_BYTES + 4096
        routes = up["virtual_hosts"][0]["routes"]
        extra = []
        for value, path, ctype in (("stream", stream_file, "text/event-stream"),
                                   ("json", small_file, "application/json")):
            extra.append({
                "match": {"prefix": "/", "headers": [{"name": SELECT, "string_match": {"exact": value}}]},
                "direct_response": {"status": 200, "body": {"filename": str(path)}},
                "response_headers_to_add": [
                    {"header": {"key": "content-type", "value": ctype}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
                    {"header": {"key": "cache-control", "value": "no-cache"},
                     "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
            })
        routes[:0] = extra
        ingress = listeners["ingress"]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
        for r in ingress["virtual_hosts"][0]["routes"]:
            r["route"]["timeout"] = "120s"

    return tweak


def usage_counters(envoy):
    """The guard's usage counters (`tokenhub.usage.tenant.*.model.*.KIND`),
    summed per kind over tenants and models."""
    out = {}
    for name, value in envoy.stats(r"tokenhub\.usage\.").items():
        kind = name.rsplit(".", 1)[1]
        out[kind] = out.get(kind, 0) + value
    return out


def send(case, n):
    return keep_alive_requests(case.envoy.ports["listen"], case.headers, n, case.method, case.body)


def check(cases, stream_tokens, n=3):
    """Every case answers 200 with the whole answer; the metered and
    model-rule requests are counted in the guard's usage counters with the
    tokens of the answer (the stream's final chunk read), the header-only
    requests are not counted at all (their bodies are not read)."""
    for c in cases:
        conn = http.client.HTTPConnection("127.0.0.1", c.envoy.ports["listen"], timeout=60)
        try:
            conn.request(c.method, PATH, body=c.body, headers=c.headers)
            r = conn.getresponse()
            body = r.read()
        finally:
            conn.close()
        if r.status != 200:
            raise SystemExit(f"bench: {c.name}: status {r.status}: {body[:300]!r}")
        want = {"stream": (STREAM_BYTES, "text/event-stream"), "small": (None, "application/json")}.get(c.response)
        if want:
            size, ctype = want
            if size and len(body) != size:
                raise SystemExit(f"bench: {c.name}: a {len(body)}-byte answer, expected {size}")
            if r.getheader("content-type") != ctype:
                raise SystemExit(f"bench: {c.name}: content-type {r.getheader('content-type')}, expected {ctype}")
        if c.envoy.bundle is None:
            continue
        before = usage_counters(c.envoy)
        statuses = send(c, n)
        after = usage_counters(c.envoy)
        if statuses != {200: n}:
            raise SystemExit(f"bench: {c.name}: statuses {statuses}")
        grew = {k: after.get(k, 0) - before.get(k, 0) for k in ("requests", "input_tokens", "output_tokens")}
        if c.metered:
            output = stream_tokens if c.response == "stream" else SMALL_COMPLETION_TOKENS
            expect = {"requests": n, "input_tokens": n * PROMPT_TOKENS, "output_tokens": n * output}
        else:
            expect = {"requests": 0, "input_tokens": 0, "output_tokens": 0}
        if grew != expect:
            raise SystemExit(f"bench: {c.name}: the guard's usage counters grew by {grew} over {n} requests, "
                             f"expected {expect} ({'metered' if c.metered else 'header-only: nothing read'})")
        c.usage_check = grew
        log(f"  {c.name}: usage counted {grew}" + ("" if c.metered else " (header-only: body not read)"))
    log(f"check passed: {len(cases)} configurations answer 200 and are metered or not as they should be")


def build(work, envoy_bin, smoke):
    stream, stream_tokens = stream_response()
    files = work / "upstream"
    files.mkdir(parents=True, exist_ok=True)
    (files / "stream.sse").write_bytes(stream)
    (files / "small.json").write_bytes(small_response())
    tweak = upstream_tweak(files / "stream.sse", files / "small.json")
    log("publishing the bundles (bench-bundle; the metered one with --metered)")
    plain = make_bundle(work, "plain", 10, 1, 0)
    metered = make_bundle(work, "metered", 10, 1, 0, ["--metered"])
    if plain["credentials"]["allow"] != metered["credentials"]["allow"]:
        raise SystemExit("bench: the two bundles' header-only keys differ")

    def guard(name, b):
        return Envoy(name, work, envoy_bin, guard_filters(b["live"]), env={"TOKENHUB_BUNDLE_KEY": b["key"]}, bundle=b,
                     tweak=tweak)

    envoys = {"bare": Envoy("bare", work, envoy_bin, [], tweak=tweak),
              "guard-plain": guard("guard-plain", plain), "guard-metered": guard("guard-metered", metered)}
    creds = metered["credentials"]
    scripts = work / "wrk"
    scripts.mkdir(exist_ok=True)
    # (counted, warm-up) under callgrind; a metered 1 MiB answer is ~200
    # million instructions, ~4 s under callgrind.
    small_n = (10, 10) if smoke else (500, 1000)
    stream_n = (1, 1) if smoke else (10, 5)

    def case(name, envoy, key, response, label, metered_=False):
        headers = auth(key)
        body, method = None, "GET"
        if response != "get":
            headers = dict(headers, **{"content-type": "application/json", SELECT: "json" if response == "small"
                                       else "stream"})
            body, method = chat_request(response == "stream"), "POST"
        c = Case(name, envoys[envoy], headers, (200, {}), label, "metered")
        c.method, c.body, c.response, c.metered = method, body, response, metered_
        c.instr_requests = stream_n if response == "stream" else small_n
        if body:
            c.wrk_script = wrk_post_script(scripts / f"{name}.lua", body)
        return c

    allow = creds["allow"]
    # The same four keys before a small JSON answer, then before a stream.
    cases = [case(f"{kind}-{response}", envoy, key, response, f"{who}, {answer}", metered_)
             for response, answer in (("small", "small JSON answer"), ("stream", "1 MiB SSE answer"))
             for kind, envoy, key, who, metered_ in (
                 ("bare", "bare", allow, "bare Envoy", False),
                 ("header", "guard-metered", allow, "guard, header-only key", False),
                 ("metered", "guard-metered", creds["metered"], "guard, metered key (tokens/minute)", True),
                 ("models", "guard-metered", creds["models"], "guard, model-rule key", True))]
    cases += [
        case("plain-allow", "guard-plain", allow, "get", "guard allow (GET, no body), bundle with no metered key"),
        case("mixed-allow", "guard-metered", allow, "get", "guard allow (GET, no body), bundle with metered keys"),
        case("plain-header-small", "guard-plain", allow, "small",
             "guard, header-only key, small JSON answer, bundle with no metered key"),
    ]
    return envoys, cases, stream_tokens, {"plain": plain, "metered": metered}


def _med(xs):
    return statistics.median(xs) if xs else float("nan")


def derive(instr, cpu):
    """The figures the issue asks for, from instructions (and CPU µs) per request."""
    mib = STREAM_BYTES / MIB
    out = {}
    for src, table in (("instructions", instr), ("cpu_us", cpu)):
        def g(name):
            return table.get(name, float("nan"))
        d = {
            "metered_per_request": g("metered-small") - g("header-small"),
            "models_per_request": g("models-small") - g("header-small"),
            "metered_per_mib": ((g("metered-stream") - g("header-stream"))
                                - (g("metered-small") - g("header-small"))) / mib,
            "models_per_mib": ((g("models-stream") - g("header-stream"))
                               - (g("models-small") - g("header-small"))) / mib,
            "header_over_bare_small": g("header-small") - g("bare-small"),
            "header_over_bare_per_mib": ((g("header-stream") - g("bare-stream"))
                                         - (g("header-small") - g("bare-small"))) / mib,
            "bare_per_mib": (g("bare-stream") - g("bare-small")) / mib,
            "allow_mixed_minus_plain": g("mixed-allow") - g("plain-allow"),
            "small_mixed_minus_plain": g("header-small") - g("plain-header-small"),
        }
        out[src] = d
    return out


def native_parse(stream_file):
    """The usage parser alone (bench/tools usage-count, natively, 16 KiB
    chunks) over the same stream under callgrind: instructions per MiB."""
    exe = TOOLS_BIN / "usage-count"
    if not shutil.which("valgrind") or not exe.exists():
        log("valgrind or usage-count missing: skipping the native parser count")
        return None
    out = stream_file.parent / "usage-count.callgrind"
    iters = 2
    r = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--collect-atstart=no",
                        "--toggle-collect=*parse_body*", str(exe), "--body", str(stream_file), "--chunk", "16384",
                        "--iters", str(iters)], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"bench: usage-count under callgrind failed: {r.stderr[-2000:]}")
    m = re.search(r"^totals:\s+(\d+)", out.read_text(), re.M)
    if not m:
        raise SystemExit(f"bench: {out}: no totals line")
    return int(m.group(1)) / iters / (STREAM_BYTES / MIB)


def report(raw):
    meta, instr, instr_runs, cpu, derived = (raw[k] for k in ("meta", "instructions", "instruction_runs", "cpu_us",
                                                              "derived"))
    def response(name):
        return "stream" if name.endswith("-stream") else "get" if name.endswith("-allow") else "small"

    cases = [SimpleNamespace(name=name, **dict({"response": response(name)}, **c)) for name, c in raw["cases"].items()]
    i, c = derived["instructions"], derived["cpu_us"]
    lines = [
        "# Metered path: what reading bodies for tokens costs (issue 18)",
        "",
        f"`make bench-metered` (`bench/run.sh metered`: builds, then `{meta['command']}`) on {meta['when']} UTC; "
        f"{meta['machine']}; Envoy "
        f"{meta['envoy']}, V8, one worker (`--concurrency 1`, pinned to core 0; load on core 1).",
        "",
        "The upstream is a second listener of the same Envoy answering with `direct_response` from a file "
        f"(no other process in the measurement): a small OpenAI chat completion (JSON, {len(small_response())} "
        f"bytes, with `usage`) or a {STREAM_BYTES / MIB:g} MiB ({STREAM_BYTES:,} bytes) OpenAI chat completion stream "
        f"(`text/event-stream`: {meta['stream_tokens'] + 4:,} `data:` events, ~280 bytes each: a role chunk, "
        f"{meta['stream_tokens']:,} content chunks, a finish chunk, the `usage` chunk, then `data: [DONE]`). Every request is a POST of a small chat request (model, `max_tokens`; the stream "
        "request with `stream_options.include_usage`). Same bundle for all three keys: `allow` (header-only: no "
        "model rules, no token limits), `metered` (tokens per minute, never reached: request body read for "
        "`max_tokens`, response parsed for usage, reservation and settlement in shared data), `models` (a "
        "model allowlist: request body read for the model, response parsed for usage, no budget).",
        "",
        "Checked before any figure: every answer is 200 and complete; over 3 requests each, the guard's usage "
        "counters grew by exactly the prompt and completion tokens of the answers for `metered` and `models` "
        "(the stream's final chunk was read), and not at all for `allow` (its bodies were not read).",
        "",
        "## Instructions per request (callgrind, deterministic)",
        "",
        f"Envoy under `valgrind --tool=callgrind` (all threads, user space), all cases of one Envoy in one run: "
        f"{meta['small_n'][1]} warm-up requests, then {min(20, meta['small_n'][0])} more and "
        f"{meta['small_n'][0]} counted for the small answers; {meta['stream_n'][1]}, "
        f"{min(20, meta['stream_n'][0])} and {meta['stream_n'][0]} for the 1 MiB stream; on one keep-alive "
        "connection. "
        f"{meta['instr_runs']} run(s); the figure is the median"
        + (", with the spread of the runs." if meta["instr_runs"] > 1 else "."),
        "",
        "| case | instructions / request | over bare (same answer) |" + (" runs |" if meta["instr_runs"] > 1 else ""),
        "|---|---:|---:|" + ("---|" if meta["instr_runs"] > 1 else ""),
    ]
    for cs in cases:
        n = instr.get(cs.name)
        if n is None:
            continue
        bare = instr.get("bare-stream" if cs.response == "stream" else "bare-small")
        over = f"{n - bare:+,.0f}" if bare is not None and cs.envoy != "bare" and cs.response != "get" else ""
        runs = ""
        if meta["instr_runs"] > 1:
            runs = " " + ", ".join(f"{r[cs.name]:,.0f}" for r in instr_runs if cs.name in r) + " |"
        lines.append(f"| {cs.label} | {n:,.0f} | {over} |{runs}")
    lines += [
        "",
        "| figure | instructions |",
        "|---|---:|",
        f"| **metered over header-only, per request** (small request + small JSON answer) | "
        f"**{i['metered_per_request']:+,.0f}** |",
        f"| **metered over header-only, per MiB of streamed answer** (the per-request part taken off) | "
        f"**{i['metered_per_mib']:+,.0f}** |",
        f"| model rule over header-only, per request | {i['models_per_request']:+,.0f} |",
        f"| model rule over header-only, per MiB | {i['models_per_mib']:+,.0f} |",
        f"| header-only guard over bare Envoy, per request (small POST) | {i['header_over_bare_small']:+,.0f} |",
        f"| header-only guard over bare Envoy, per MiB (Envoy entering the VM per body chunk) | "
        f"{i['header_over_bare_per_mib']:+,.0f} |",
        f"| bare Envoy, per MiB proxied | {i['bare_per_mib']:,.0f} |",
    ]
    if raw.get("native_parser_per_mib"):
        lines += [
            f"| the usage parser alone, natively, per MiB (`usage-count`, 16 KiB chunks, no Envoy, no Wasm) | "
            f"{raw['native_parser_per_mib']:,.0f} |",
        ]
    native = raw.get("native_parser_per_mib")
    per_byte = i["metered_per_mib"] / MIB
    spreads = {n: max(r[n] for r in instr_runs) - min(r[n] for r in instr_runs)
               for n in instr if all(n in r for r in instr_runs)}
    if len(instr_runs) > 1 and spreads:
        worst = max(spreads, key=spreads.get)
        lines += ["", f"Run-to-run spread: at most {spreads[worst]:,.0f} instructions ({worst}; a 1 MiB answer is "
                      "cut into body chunks differently from run to run), so differences of that order, like the "
                      "header-only guard's per-MiB figure, are noise."]
    lines += [
        "",
        f"Reading it: the metered path adds {i['metered_per_request']:,.0f} instructions to a small request "
        f"({i['metered_per_request'] / (instr['header-small'] - instr['bare-small']):.1f}× what the header-only "
        "guard adds over bare Envoy: the request body read and scanned, the reservation and its settlement in "
        "shared data, the response parsed, filter state and usage counters written), and "
        f"{per_byte:,.0f} instructions per byte streamed ({i['metered_per_mib'] / i['bare_per_mib']:.0f}× what "
        "bare Envoy spends proxying the byte). The model-rule key costs the same per byte (its response is "
        "parsed for usage too): the cost is the response parsing, not the budget."
        if "header-small" in instr and "bare-small" in instr else "",
    ]
    if native:
        lines += [
            "",
            f"Where the per-byte cost goes: the usage parser alone, natively (`bench/tools` `usage-count` under "
            f"callgrind, the same stream in 16 KiB chunks), takes {native / MIB:,.0f} instructions per byte "
            f"({native / i['metered_per_mib']:.0%} of the metered path's per-MiB figure); the rest is the same "
            "code compiled to Wasm and run by V8, plus the glue per body chunk (copied into the VM, zeroed "
            "after). Natively a third of it is `core::jsonscan::JsonScan::byte`, the JSON state machine every "
            "byte of every event goes through (content strings included, though only the final chunk's "
            "`usage` is kept), the rest the SSE framing and capture in `core::usage` (`callgrind_annotate` of "
            "the `usage-count` run): the place to make the metered path cheaper.",
        ]
    lines += [
        "",
        "## The header-only allow path when another key is metered",
        "",
        "The same request with the same header-only key, through two Envoys whose bundles differ only in the "
        "two extra keys (`guard-plain`: the 10-key bench bundle; `guard-metered`: the same + `metered` and "
        "`models`):",
        "",
        "| request | no key metered | another key metered | difference |",
        "|---|---:|---:|---:|",
    ]
    for label, a, b in (("GET, no body (the allow path of `make bench`)", "plain-allow", "mixed-allow"),
                        ("POST, small chat request, small JSON answer", "plain-header-small", "header-small")):
        if a in instr and b in instr:
            d = instr[b] - instr[a]
            lines.append(f"| {label} | {instr[a]:,.0f} | {instr[b]:,.0f} | {d:+,.0f} ({d / instr[a]:+.2%}) |")
    lines += [
        "",
        "## CPU time per request (wrk; noisy)",
        "",
        f"`wrk -t1 -c{meta['connections']}`, {meta['rounds']} interleaved round(s) of {meta['duration']:.0f} s "
        "per case; Envoy's user + system time over the requests it answered; median over rounds. This "
        "machine is shared (2 cores, other builds and tests running): load average "
        f"{meta['load_start']} at the start, {meta['load_end']} at the end. Treat CPU figures as ±20 %; "
        "the instruction counts above decide.",
        "",
        "| case | CPU µs / request (median) | min–max over rounds | requests/s |",
        "|---|---:|---:|---:|",
    ]
    for cs in cases:
        if cs.saturation:
            xs = [s["cpu_us_per_req"] for s in cs.saturation]
            lines.append(f"| {cs.label} | {_med(xs):.1f} | {min(xs):.1f}–{max(xs):.1f} | "
                         f"{_med([s['rps'] for s in cs.saturation]):,.0f} |")
    tally = []
    for cs in cases:
        counted = [x.get("usage_requests") for x in cs.saturation if x.get("usage_requests") is not None]
        if cs.saturation and counted and sum(counted):
            tally.append(f"{cs.name} {sum(counted):,} / {sum(x['served'] for x in cs.saturation):,}")
    if tally:
        lines += ["", "Metered during the wrk rounds (requests in the guard's usage counters / answered by Envoy): "
                      + "; ".join(tally) + ". They differ by streams wrk cuts off at the end of a run: the guard "
                      "counts an aborted stream with what arrived, Envoy does not count it as answered."]
    if cpu:
        lines += [
            "",
            f"Metered over header-only: {c['metered_per_request']:+.1f} µs per request (small), "
            f"{c['metered_per_mib']:+.1f} µs per MiB streamed; header-only over bare: "
            f"{c['header_over_bare_per_mib']:+.1f} µs per MiB; bare Envoy {c['bare_per_mib']:.1f} µs per MiB.",
        ]
    lines += ["", "Raw figures: `bench/results/metered.json`.", ""]
    return "\n".join(lines)


def metered(args):
    """The metered path against the header-only path (see the module doc)."""
    if args.report_from:
        raw = json.loads(Path(args.report_from).read_text())
        if args.native_parse:
            stream, _ = stream_response()
            path = BENCH / "work" / "metered-report" / "stream.sse"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(stream)
            raw["native_parser_per_mib"] = native_parse(path)
        write_results(raw, Path(args.out))
        return
    smoke = args.smoke
    work = BENCH / "work" / "metered"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    out_dir = work / "results" if smoke else Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    envoy_bin = envoy_binary()
    version = re.search(r"/(\d+\.\d+\.\d+)/", subprocess.run([envoy_bin, "--version"], capture_output=True,
                                                             text=True).stdout)
    rounds, duration = (1, 1) if smoke else (args.rounds, args.duration)
    meta = {
        "when": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "machine": f"{os.cpu_count()} cores ({platform.machine()}), shared",
        "envoy": version.group(1) if version else "?",
        "command": " ".join(["bench/bench.py metered", shlex.join(sys.argv[2:])]).strip(),
        "load_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "rounds": rounds, "duration": duration, "connections": args.connections, "smoke": smoke,
    }
    envoys, cases, stream_tokens, _ = build(work, envoy_bin, smoke)
    meta["stream_tokens"] = stream_tokens
    meta["small_n"], meta["stream_n"] = cases[0].instr_requests, cases[4].instr_requests
    try:
        for e in envoys.values():
            e.validate()
        for e in envoys.values():
            e.start()
        for e in envoys.values():
            if e.bundle:
                e.wait_bundle_loaded(120)
        check(cases, stream_tokens)
        if not args.no_cpu:
            log("warm-up, then CPU per request (wrk)")
            timed = [c for c in cases if c.response != "get"]
            for c in timed if not smoke else ():
                wrk(c.envoy.ports["listen"], c.headers, 1, args.connections, c.wrk_script)
            for r in range(rounds):
                for c in timed[r % len(timed):] + timed[:r % len(timed)]:
                    before = usage_counters(c.envoy).get("requests", 0) if c.envoy.bundle else 0
                    res = saturation_run(c, duration, args.connections)
                    if res["wrong_status"] or res["socket_errors"] or not res["served"]:
                        raise SystemExit(f"bench: {c.name}: {res['wrong_status']} unexpected statuses "
                                         f"({res['classes']}), {res['socket_errors']} socket errors")
                    # Every answered metered request counted, give or take
                    # those wrk cut off at the end (at most one per
                    # connection: Envoy counted their status, the guard
                    # counts them when their stream is deleted).
                    low, high = ((res["served"] - args.connections, res["served"] + args.connections) if c.metered
                                 else (0, 0))
                    # (A stream wrk cut off is counted when Envoy deletes it: a moment later.)
                    deadline = time.time() + 3
                    while True:
                        counted = usage_counters(c.envoy).get("requests", 0) - before if c.envoy.bundle else 0
                        if counted >= res["served"] or not c.metered or time.time() > deadline:
                            break
                        time.sleep(0.1)
                    if not low <= counted <= high:
                        raise SystemExit(f"bench: {c.name}: {counted} requests metered of {res['served']} answered")
                    res["usage_requests"] = counted
                    c.sat.append(res)
                log(f"round {r + 1}/{rounds}: " + ", ".join(f"{c.name} {c.sat[-1]['cpu_us_per_req']:.0f}µs"
                                                             for c in timed))
    finally:
        for e in envoys.values():
            e.stop()
    meta["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())

    counted = cases
    if smoke:
        # The guard with every kind of request; the other Envoys' callgrind
        # path is the same code (and make bench-smoke runs it).
        counted = [c for c in cases if c.envoy.name == "guard-metered"]
    instr_runs = []
    for run in range(1 if smoke else args.instr_runs):
        log(f"instructions per request under callgrind (run {run + 1})")
        instr_runs.append(envoy_instructions(counted, work, smoke))
    instr = {k: _med([r[k] for r in instr_runs]) for k in instr_runs[0]} if instr_runs else {}
    meta["instr_runs"] = len(instr_runs)
    cpu = {c.name: _med([s["cpu_us_per_req"] for s in c.sat]) for c in cases if c.sat}
    derived = derive(instr, cpu)
    meta["wall_s"] = round(time.time() - t0)
    raw = {"meta": meta, "instructions": instr, "instruction_runs": instr_runs, "cpu_us": cpu, "derived": derived,
           "native_parser_per_mib": native_parse(work / "upstream" / "stream.sse"),
           "cases": {c.name: {"label": c.label, "envoy": c.envoy.name, "response": c.response, "saturation": c.sat,
                              "usage_check": getattr(c, "usage_check", None)} for c in cases}}
    write_results(raw, out_dir)
    log(f"results in {out_dir} ({meta['wall_s']} s)")


def write_results(raw, out_dir):
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metered.json").write_text(json.dumps(raw, indent=1))
    text = report(raw)
    (out_dir / "metered.md").write_text(text)
    print(text)


def add_arguments(ap):
    ap.add_argument("--smoke", action="store_true",
                    help="the check, one short CPU round, a few requests under callgrind: proves it runs")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved wrk rounds (default 5)")
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run (default 3)")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--instr-runs", type=int, default=2, help="callgrind runs (default 2; the median is reported)")
    ap.add_argument("--no-cpu", action="store_true", help="skip the wrk CPU rounds")
    ap.add_argument("--out", default=str(BENCH / "results"))
    ap.add_argument("--report-from", metavar="METERED_JSON", help="only rewrite metered.md from a metered.json")
    ap.add_argument("--native-parse", action="store_true", help="with --report-from: count the native parser anew")
