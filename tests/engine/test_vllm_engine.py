"""VllmEngine with real vLLM on the CPU (acceptance of issue 3).

Test order matters for speed only (see conftest): failed loads, then the
hot-swap test (ends with SmolLM2 loaded), the SmolLM2 tests, the MiniLM tests,
and last the engine-death and hang tests, which kill the loaded engine.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from openai.types.shared import ErrorObject

from jobs.engine.base import EngineDeadError, EngineRequest, EngineResult, ModelLoadError, ModelSpec
from jobs.engine.errors import openai_error

from .conftest import MINILM_NAME, SMOL_NAME, Background, api_server_reference, run_batch_reference

pytestmark = pytest.mark.engine

CHAT, COMPLETIONS, EMBEDDINGS = "/v1/chat/completions", "/v1/completions", "/v1/embeddings"
# Differ between any two runs by design.
# system_fingerprint is a hash of the engine's whole configuration; ours runs
# vLLM's offline scheduler defaults (more sequences in flight) where the
# reference server runs its online ones, so it differs like an id does.
VOLATILE = {"id", "created", "request_id", "system_fingerprint"}


def chat(cid: str, content: str, **body: Any) -> EngineRequest:
    return EngineRequest(
        cid,
        CHAT,
        {
            "model": SMOL_NAME,
            "messages": [{"role": "user", "content": content}],
            "temperature": 0,
            "max_tokens": 16,
            **body,
        },
    )


def run_all(engine: Any, requests: list[EngineRequest]) -> dict[str, EngineResult]:
    results = {r.custom_id: r for r in engine.run(requests)}
    assert set(results) == {r.custom_id for r in requests}
    return results


def text_of(result: EngineResult) -> str:
    assert result.status_code == 200, result.body
    return result.body["choices"][0]["message"]["content"]


def engine_children() -> list[Any]:
    """Our descendants, minus multiprocessing's resource tracker, the reference runs, and the
    session's servers and workers (batchsite.serve, gunicorn, run_gpu_worker: tests that ran earlier started them)."""
    import psutil

    skip: set[int] = set()
    kids = psutil.Process().children(recursive=True)
    others = ("resource_tracker", "vllm.entrypoints.openai", "batchsite.serve", "gunicorn", "manage.py")
    for proc in kids:
        try:
            cmdline = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        if any(other in cmdline for other in others):
            skip.add(proc.pid)
            skip.update(p.pid for p in proc.children(recursive=True))
    return [p for p in kids if p.pid not in skip and p.is_running()]


def total_rss() -> int:
    import psutil

    me = psutil.Process()
    return me.memory_info().rss + sum(p.memory_info().rss for p in engine_children())


def assert_same_body(ours: Any, theirs: Any, path: str = "body", volatile: set[str] = VOLATILE) -> None:
    """Field for field; ids/timestamps (``volatile``) aside; floats to 1e-4 (different thread counts)."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        assert set(ours) == set(theirs), f"{path}: keys {sorted(set(ours) ^ set(theirs))}"
        for key in ours:
            if key not in volatile:
                assert_same_body(ours[key], theirs[key], f"{path}.{key}", volatile)
    elif isinstance(ours, list) and isinstance(theirs, list):
        assert len(ours) == len(theirs), f"{path}: length {len(ours)} != {len(theirs)}"
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert_same_body(a, b, f"{path}[{i}]", volatile)
    elif isinstance(ours, float) or isinstance(theirs, float):
        assert math.isclose(ours, theirs, rel_tol=1e-4, abs_tol=1e-4), f"{path}: {ours} != {theirs}"
    else:
        assert ours == theirs, f"{path}: {ours!r} != {theirs!r}"


# The reference cases: vLLM's own entry points answer these in the background
# while the engine tests run (see ``references``).
CHAT_BODIES: dict[str, dict[str, Any]] = {
    "plain": {"messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 24},
    "system": {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Name three fruits."},
        ],
        "max_tokens": 20,
    },
    "logprobs": {
        "messages": [{"role": "user", "content": "Say hi."}],
        "max_tokens": 6,
        "logprobs": True,
        "top_logprobs": 2,
    },
    "n2-seeded": {
        "messages": [{"role": "user", "content": "One word for happy?"}],
        "max_tokens": 5,
        "n": 2,
        "temperature": 0.8,
        "seed": 3,
    },
    "stop": {"messages": [{"role": "user", "content": "Count from 1 to 10."}], "max_tokens": 30, "stop": ["4"]},
    "seeded": {
        "messages": [{"role": "user", "content": "Invent a name."}],
        "max_tokens": 12,
        "temperature": 1.0,
        "seed": 42,
    },
    "greedy-n2": {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, "n": 2},  # a 400
    # Final-only detokenization (jobs/engine/final_decode.py) must give vLLM's text: lines that
    # end on EOS (the stop token left out), n > 1, multi-byte output, json_schema; and the lines
    # it must leave to vLLM's incremental detokenizer: stop strings (above), logprobs (above),
    # a stop string kept in the output, special tokens kept.
    "ends-on-eos": {"messages": [{"role": "user", "content": "Reply with only the word yes."}], "max_tokens": 40},
    "n3-seeded": {
        "messages": [{"role": "user", "content": "Write a short line about the sea."}],
        "max_tokens": 24,
        "n": 3,
        "temperature": 1.0,
        "seed": 7,
    },
    "unicode": {
        "messages": [{"role": "user", "content": "Écris « bonjour » en chinois, japonais et avec un emoji 🙂."}],
        "max_tokens": 40,
        "temperature": 1.0,
        "seed": 5,
    },
    "json-schema": {
        "messages": [{"role": "user", "content": "Give a city and its country as JSON."}],
        "max_tokens": 48,
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "place",
                "schema": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
                    "required": ["city", "country"],
                },
            },
        },
    },
    "stop-included": {
        "messages": [{"role": "user", "content": "Count from 1 to 10."}],
        "max_tokens": 30,
        "stop": ["4"],
        "include_stop_str_in_output": True,
    },
    "special-kept": {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 30, "skip_special_tokens": False},
    "too-long": {"messages": [{"role": "user", "content": "hello " * 3000}], "max_tokens": 4},  # a 400
}
COMPLETION_BODIES: dict[str, dict[str, Any]] = {
    "plain": {"prompt": "The capital of France is", "max_tokens": 12},
    "logprobs": {"prompt": "Once upon a time", "max_tokens": 6, "logprobs": 2},
    "echo": {"prompt": "Hello, my name is", "max_tokens": 5, "echo": True},
    "batch-prompt": {"prompt": ["One, two,", "A, B,"], "max_tokens": 4},
    "too-long": {"prompt": "hello " * 3000, "max_tokens": 4},
    "max-tokens": {"prompt": "Hi", "max_tokens": 100_000},
    "bad-param": {"prompt": "Hi", "max_tokens": 4, "top_p": 7},
    "bad-type": {"prompt": "Hi", "max_tokens": "four"},
    "unicode-n2": {"prompt": "Voici « 你好 » :", "max_tokens": 16, "n": 2, "temperature": 1.0, "seed": 11},
}
EMBED_BODIES: dict[str, dict[str, Any]] = {
    "one": {"input": "A sentence to embed."},
    "many": {"input": ["first", "second text", "third"]},
    "float": {"input": "x", "encoding_format": "float"},
}
for _body in (*CHAT_BODIES.values(), *COMPLETION_BODIES.values()):
    _body.setdefault("temperature", 0)
    _body["model"] = SMOL_NAME
for _body in EMBED_BODIES.values():
    _body["model"] = MINILM_NAME


def batch_lines(url: str, bodies: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"custom_id": cid, "method": "POST", "url": url, "body": body} for cid, body in bodies.items()]


@pytest.fixture(scope="module", autouse=True)
def references(smol_spec: ModelSpec, minilm_spec: ModelSpec, tmp_path_factory: pytest.TempPathFactory) -> Any:
    jobs = Background()
    jobs.submit("chat", run_batch_reference, smol_spec, batch_lines(CHAT, CHAT_BODIES), tmp_path_factory.mktemp("c"))
    jobs.submit(
        "completions", api_server_reference, smol_spec, COMPLETIONS, COMPLETION_BODIES, tmp_path_factory.mktemp("p")
    )
    jobs.submit(
        "embeddings",
        run_batch_reference,
        minilm_spec,
        batch_lines(EMBEDDINGS, EMBED_BODIES),
        tmp_path_factory.mktemp("e"),
    )
    yield jobs
    jobs.close()


# ---------------------------------------------------------------- loading
def test_failed_loads_leave_engine_usable(engine: Any, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        engine.load(ModelSpec("missing", str(tmp_path / "nope"), ("chat",)))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "no-such-arch", "architectures": ["Nope"]}))
    with pytest.raises(ModelLoadError, match="could not load model 'broken'"):
        engine.load(ModelSpec("broken", str(broken), ("chat",)))
    with pytest.raises(ModelLoadError, match="unknown engine option"):
        engine.load(ModelSpec("opts", str(broken), ("chat",), {"max_model_lenn": 5}))
    assert engine.loaded_model is None
    assert engine_children() == []


def test_hot_swap_releases_processes_and_memory(engine: Any, smol_spec: ModelSpec, minilm_spec: ModelSpec) -> None:
    """A -> B -> A in one process; the previous engine's processes and memory are gone each time."""
    paris = [chat("paris", "What is the capital of France?")]
    embed = [EngineRequest("e", EMBEDDINGS, {"model": minilm_spec.name, "input": "hello"})]
    engine.unload()
    baseline = total_rss()
    timings: dict[str, float] = {}
    seen_pids: list[set[int]] = []
    after_unload: list[int] = []
    for step, (spec, requests) in enumerate([(smol_spec, paris), (minilm_spec, embed), (smol_spec, paris)]):
        started = time.monotonic()
        if step:
            # load() must unload by itself; time that part separately too.
            engine.unload()
            after_unload.append(total_rss())
            assert not any(p.pid in seen_pids[-1] for p in engine_children()), "old engine processes survive"
        engine.load(spec)
        timings[f"{step}:{spec.name}"] = time.monotonic() - started
        seen_pids.append({p.pid for p in engine_children()})
        assert seen_pids[-1], "vLLM engine-core processes expected"
        result = run_all(engine, requests)[requests[0].custom_id]
        assert result.status_code == 200
        if spec is smol_spec:
            assert "Paris" in text_of(result)
        else:
            assert len(result.body["data"][0]["embedding"]) == 384
    loaded = total_rss()
    print(f"\nswap timings (unload+load): {timings}; last unload {engine.last_unload_seconds:.2f}s")
    print(
        f"RSS baseline {baseline / 2**20:.0f} MiB, after unloads {[r // 2**20 for r in after_unload]} MiB, "
        f"loaded {loaded / 2**20:.0f} MiB"
    )
    # What stays after an unload is this process's frontend (tokenizer, imported code),
    # not the engine: bounded and not growing from swap to swap.
    for rss in after_unload:
        assert rss - baseline < 600 * 2**20
    assert after_unload[1] - after_unload[0] < 200 * 2**20
    assert engine.loaded_model == SMOL_NAME


# ---------------------------------------------------------------- SmolLM2
def test_reuses_loaded_engine(engine: Any, smol_spec: ModelSpec) -> None:
    engine.load(smol_spec)
    pids = {p.pid for p in engine_children()}
    started = time.monotonic()
    engine.load(ModelSpec(smol_spec.name, smol_spec.source, smol_spec.endpoints, dict(smol_spec.engine_options)))
    assert time.monotonic() - started < 1
    assert {p.pid for p in engine_children()} == pids


def test_per_line_failures_do_not_fail_the_chunk(engine: Any, smol_spec: ModelSpec) -> None:
    engine.load(smol_spec)
    requests = [
        chat("ok-1", "Say hello."),
        chat("too-long", "hello " * 3000),
        chat("ok-2", "Count to three."),
        chat("max-tokens", "Hi", max_tokens=100_000),
        chat("bad-param", "Hi", temperature="hot"),
        chat("stream", "Hi", stream=True),
        EngineRequest("wrong-url", "/v1/images", {"model": SMOL_NAME}),
        EngineRequest("wrong-kind", EMBEDDINGS, {"model": SMOL_NAME, "input": "x"}),
        chat("ok-3", "Name a colour."),
    ]
    results = run_all(engine, requests)
    for cid in ("ok-1", "ok-2", "ok-3"):
        assert results[cid].status_code == 200
        assert results[cid].usage and results[cid].usage["completion_tokens"] > 0
    for cid, status in {"too-long": 400, "max-tokens": 400, "bad-param": 400, "stream": 400, "wrong-url": 404}.items():
        r = results[cid]
        assert r.status_code == status, (cid, r.body)
        # OpenAI's error object (the SDK's ErrorObject): a type word, a string or null code.
        ErrorObject.model_validate(r.body["error"], strict=True)
        assert set(r.body["error"]) == {"message", "type", "param", "code"}
        assert r.body["error"]["type"] == "invalid_request_error" and r.usage is None
    assert "maximum context length is 2048 tokens" in results["too-long"].body["error"]["message"]
    assert results["bad-param"].body["error"]["param"] == "body.temperature"
    assert results["wrong-kind"].status_code >= 400


def test_capital_of_france(engine: Any, smol_spec: ModelSpec) -> None:
    engine.load(smol_spec)
    result = run_all(engine, [chat("q", "What is the capital of France?", max_tokens=32)])["q"]
    assert "Paris" in text_of(result)
    assert result.body["model"] == SMOL_NAME
    assert result.usage == {k: result.body["usage"][k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}


def test_seed_is_repeatable_and_does_not_crash(engine: Any, smol_spec: ModelSpec) -> None:
    engine.load(smol_spec)
    req = chat("s", "Tell me a story.", temperature=1.0, seed=1234, max_tokens=24)
    first = text_of(run_all(engine, [req])["s"])
    second = text_of(run_all(engine, [req, chat("other", "Hello", temperature=1.0, seed=7)])["s"])
    assert first == second
    assert engine.is_alive()


def test_json_schema_response_format(engine: Any, smol_spec: ModelSpec) -> None:
    import jsonschema

    engine.load(smol_spec)
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": schema}}
    result = run_all(
        engine, [chat("j", "Give the largest city of France as JSON.", response_format=fmt, max_tokens=64)]
    )["j"]
    jsonschema.validate(json.loads(text_of(result)), schema)


def test_sampling_parameters_take_effect(engine: Any, smol_spec: ModelSpec) -> None:
    engine.load(smol_spec)
    results = run_all(
        engine,
        [
            chat("lp", "Say yes.", logprobs=True, top_logprobs=3, max_tokens=4),
            chat("n", "Pick a number.", n=2, temperature=0.8, top_p=0.9, max_tokens=4),
            chat("stop", "Count from 1 to 10 separated by commas.", stop=["5"], max_tokens=40),
            chat("mct", "Write a poem.", max_completion_tokens=3, max_tokens=None, frequency_penalty=0.5),
        ],
    )
    content = results["lp"].body["choices"][0]["logprobs"]["content"]
    assert len(content) == results["lp"].usage["completion_tokens"]
    assert all(len(tok["top_logprobs"]) == 3 for tok in content)
    assert len(results["n"].body["choices"]) == 2
    assert "5" not in text_of(results["stop"]) and results["stop"].body["choices"][0]["finish_reason"] == "stop"
    assert results["mct"].usage["completion_tokens"] == 3


def test_streams_in_completion_order_with_bounded_window(engine: Any, smol_spec: ModelSpec) -> None:
    engine.load(smol_spec)
    pulled = 0

    def source() -> Any:
        nonlocal pulled
        yield chat("long", "Write a long essay about rivers.", max_tokens=48, ignore_eos=True)
        for i in range(engine.window + 20):
            pulled += 1
            yield chat(f"short-{i}", f"Say {i}", max_tokens=1)

    stream = engine.run(source())
    first = next(stream)
    assert first.custom_id != "long"
    assert pulled <= engine.window  # lazily consumed: never more than the window ahead
    order = [first.custom_id] + [r.custom_id for r in stream]
    assert len(order) == engine.window + 21
    assert order.index("long") > len(order) // 2


def test_a_configured_window_bounds_the_lines_in_flight(engine: Any, smol_spec: ModelSpec) -> None:
    # BATCHSITE_ENGINE_WINDOW reaches the engine as window_lines (tests/engine/test_priming.py).
    engine.load(smol_spec)
    engine.window_lines = 40
    pulled = 0

    def source() -> Any:
        nonlocal pulled
        for i in range(60):
            pulled += 1
            yield chat(f"s-{i}", f"Say {i}", max_tokens=1)

    try:
        stream = engine.run(source())
        first = next(stream)
        assert pulled == 40  # one window, and no further before results come back
        assert len({first.custom_id} | {r.custom_id for r in stream}) == 60
    finally:
        engine.window_lines = 0


def test_abort_from_another_thread(engine: Any, smol_spec: ModelSpec) -> None:
    engine.load(smol_spec)
    requests = [chat(f"a{i}", "Write a long essay.", max_tokens=200, ignore_eos=True) for i in range(40)]
    timer = threading.Timer(1.0, engine.abort)
    timer.start()
    started = time.monotonic()
    got = list(engine.run(requests))
    assert time.monotonic() - started < 30
    # One result per request taken, the aborted ones marked so (no status, no body).
    aborted = [r for r in got if r.aborted]
    assert aborted and len(got) <= len(requests)
    assert all(r.status_code == 0 and r.body == {} for r in aborted)
    assert "Paris" in text_of(run_all(engine, [chat("q", "What is the capital of France?")])["q"])


def test_abort_by_tag_stops_only_those_requests(engine: Any, smol_spec: ModelSpec) -> None:
    """A cancelled batch's lines stop; another batch's lines in the same engine run on."""
    import dataclasses

    engine.load(smol_spec)
    cancelled = [
        dataclasses.replace(chat(f"a{i}", "Write a long essay.", max_tokens=400, ignore_eos=True), tag=("a", i))
        for i in range(8)
    ]
    kept = [
        dataclasses.replace(chat(f"b{i}", "Write a poem.", max_tokens=48, ignore_eos=True), tag=("b", i))
        for i in range(8)
    ]
    results = []
    for result in engine.run([r for pair in zip(cancelled, kept, strict=True) for r in pair]):
        if not results:
            engine.abort([r.tag for r in cancelled])
        results.append(result)
    by_id = {r.custom_id: r for r in results}
    assert set(by_id) == {r.custom_id for r in cancelled + kept}
    assert all(by_id[r.custom_id].aborted for r in cancelled)
    for request in kept:
        result = by_id[request.custom_id]
        assert not result.aborted and result.status_code == 200, result
        assert result.usage["completion_tokens"] == 48


def assert_same_as_run_batch(ours: EngineResult, theirs: dict[str, Any]) -> None:
    response = theirs["response"]
    assert ours.status_code == response["status_code"], (ours.body, theirs)
    if ours.status_code == 200:
        assert theirs["error"] is None
        assert_same_body(ours.body, response["body"], ours.custom_id)
    else:
        # run_batch puts the error body in "error" and leaves the body empty; we follow
        # OpenAI: its message and param, in OpenAI's vocabulary (jobs/engine/errors.py).
        assert_same_body(ours.body, openai_error(ours.status_code, theirs["error"]), ours.custom_id)


def test_chat_bodies_equal_run_batch(engine: Any, smol_spec: ModelSpec, references: Any) -> None:
    engine.load(smol_spec)
    ours = run_all(engine, [EngineRequest(cid, CHAT, body) for cid, body in CHAT_BODIES.items()])
    theirs = references.result("chat")
    for cid in CHAT_BODIES:
        assert_same_as_run_batch(ours[cid], theirs[cid])
    assert ours["too-long"].status_code == ours["greedy-n2"].status_code == 400
    assert ours["ends-on-eos"].body["choices"][0]["finish_reason"] == "stop"


def test_final_only_decoding_takes_the_lines_that_allow_it(engine: Any, smol_spec: ModelSpec) -> None:
    from jobs.engine.final_decode import FinalDecodeClient

    engine.load(smol_spec)
    client = engine._serving.state.openai_serving_chat.engine_client
    assert isinstance(client, FinalDecodeClient)
    before = client.decoded
    incremental = [
        chat("stop", "Count to 5.", max_tokens=4, stop=["3"]),
        chat("logprobs", "Hi", max_tokens=4, logprobs=True),
        chat("special-kept", "Hi", max_tokens=4, skip_special_tokens=False),
    ]
    assert all(r.status_code == 200 for r in run_all(engine, incremental).values())
    assert client.decoded == before  # these read text as it is generated: vLLM's detokenizer did
    final = [chat("plain", "Hi", max_tokens=4), chat("n3", "Hi", max_tokens=4, n=3, temperature=1.0, seed=1)]
    assert all(r.status_code == 200 for r in run_all(engine, final).values())
    assert client.decoded == before + 4  # one per completion, n=3 counting three


def test_prefix_grouped_order_gives_every_line_the_same_answer_as_input_order(
    engine: Any, smol_spec: ModelSpec
) -> None:
    from jobs.engine.prefix_order import grouped

    engine.load(smol_spec)
    systems = ["You answer in one short sentence. " * 12, "You are a careful geographer. " * 12]
    lines = [
        EngineRequest(
            f"p-{i}",
            CHAT,
            {
                "model": SMOL_NAME,
                "messages": [{"role": "system", "content": systems[i % 2]}, {"role": "user", "content": f"Name {i}."}],
                "temperature": 0,
                "max_tokens": 8,
            },
        )
        for i in range(8)
    ]
    reordered = list(grouped(lines, window=8))
    assert [r.custom_id for r in reordered] != [r.custom_id for r in lines]
    in_order, by_prefix = run_all(engine, lines), run_all(engine, reordered)
    for cid in in_order:
        assert_same_body(by_prefix[cid].body, in_order[cid].body, cid)


def test_completion_bodies_equal_api_server(engine: Any, smol_spec: ModelSpec, references: Any) -> None:
    engine.load(smol_spec)
    ours = run_all(engine, [EngineRequest(cid, COMPLETIONS, body) for cid, body in COMPLETION_BODIES.items()])
    theirs = references.result("completions")
    for cid in COMPLETION_BODIES:
        status, body = theirs[cid]
        assert ours[cid].status_code == status, (cid, ours[cid].body, body)
        assert_same_body(ours[cid].body, body if status == 200 else openai_error(status, body), cid)
    assert {ours[c].status_code for c in ("too-long", "max-tokens", "bad-param", "bad-type")} == {400}


# ---------------------------------------------------------------- MiniLM
def test_a_swap_loads_the_next_model_while_the_old_engine_exits(
    engine: Any, smol_spec: ModelSpec, minilm_spec: ModelSpec
) -> None:
    """SmolLM2 -> MiniLM with room for both (24 GiB, ~7 GiB an engine): the load starts at once,
    the old engine's processes exit in the background, and none survives."""
    engine.load(smol_spec)  # loaded already by the tests above
    old = {p.pid for p in engine_children()}
    engine.load(minilm_spec)
    overlapped, why = engine.last_overlap
    assert overlapped, why
    assert engine.last_unload_seconds == 0.0
    result = run_all(engine, [EngineRequest("e", EMBEDDINGS, {"model": minilm_spec.name, "input": "hello"})])["e"]
    assert result.status_code == 200 and len(result.body["data"][0]["embedding"]) == 384
    engine.wait_retired()
    assert not any(p.pid in old for p in engine_children()), "old engine processes survive"
    assert engine.footprints[smol_spec.name] > 0 and engine.footprints[minilm_spec.name] > 0


def test_embeddings_match_sentence_transformers(engine: Any, minilm_spec: ModelSpec, minilm_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    texts = ["The cat sits on the mat.", "Paris is the capital of France.", "Embeddings map text to vectors."]
    engine.load(minilm_spec)
    results = run_all(
        engine,
        [
            EngineRequest("batch", EMBEDDINGS, {"model": minilm_spec.name, "input": texts}),
            EngineRequest("single", EMBEDDINGS, {"model": minilm_spec.name, "input": texts[1]}),
            EngineRequest(
                "chat-on-embedder", CHAT, {"model": minilm_spec.name, "messages": [{"role": "user", "content": "x"}]}
            ),
        ],
    )
    assert results["chat-on-embedder"].status_code >= 400
    body = results["batch"].body
    assert body["object"] == "list" and body["model"] == minilm_spec.name
    assert results["batch"].usage["prompt_tokens"] == body["usage"]["prompt_tokens"] > 0
    reference = SentenceTransformer(str(minilm_path), device="cpu").encode(texts, normalize_embeddings=True)
    for item, ref in zip(body["data"], reference, strict=True):
        vec = item["embedding"]
        cosine = sum(a * b for a, b in zip(vec, ref, strict=True)) / (
            math.sqrt(sum(a * a for a in vec)) * math.sqrt(sum(float(b) * float(b) for b in ref))
        )
        assert cosine > 0.999
    assert_same_body(results["single"].body["data"][0], body["data"][1] | {"index": 0})


def test_embedding_bodies_equal_run_batch(engine: Any, minilm_spec: ModelSpec, references: Any) -> None:
    from openai.types import CreateEmbeddingResponse

    engine.load(minilm_spec)
    ours = run_all(engine, [EngineRequest(cid, EMBEDDINGS, body) for cid, body in EMBED_BODIES.items()])
    theirs = references.result("embeddings")
    for cid in EMBED_BODIES:
        assert ours[cid].status_code == 200
        assert_same_as_run_batch(ours[cid], theirs[cid])
        # What a typed client reads from the output file: the SDK's own type, strictly.
        CreateEmbeddingResponse.model_validate(ours[cid].body, strict=True)


# ------------------------------------------------------------------ death
def test_engine_death_is_reported_not_hung(engine: Any, minilm_spec: ModelSpec) -> None:
    import signal

    engine.load(minilm_spec)
    requests = (
        EngineRequest(f"d{i}", EMBEDDINGS, {"model": minilm_spec.name, "input": f"text {i} " * 50})
        for i in range(100_000)
    )
    started = time.monotonic()
    with pytest.raises(EngineDeadError):
        for i, _ in enumerate(engine.run(requests)):
            if i == 5:
                for proc in engine_children():
                    os.kill(proc.pid, signal.SIGKILL)
    assert time.monotonic() - started < 60
    assert not engine.is_alive()
    engine.unload()
    assert engine_children() == []


def test_an_engine_that_hangs_is_given_up_on_at_once_and_leaves_no_process(engine: Any, minilm_spec: ModelSpec) -> None:
    """A real hang: the engine-core processes are stopped (SIGSTOP), so vLLM neither answers
    nor reports an error; the worker's hang watch calls mark_dead."""
    import signal

    engine.load(minilm_spec)
    requests = (
        EngineRequest(f"h{i}", EMBEDDINGS, {"model": minilm_spec.name, "input": f"text {i} " * 50})
        for i in range(100_000)
    )
    stream = engine.run(requests)
    next(stream)
    for proc in engine_children():
        os.kill(proc.pid, signal.SIGSTOP)
    timer = threading.Timer(1.0, engine.mark_dead, args=("no progress (test)",))
    timer.start()
    started = time.monotonic()
    with pytest.raises(EngineDeadError, match="no progress"):
        for _ in stream:
            pass
    assert time.monotonic() - started < 10
    assert not engine.is_alive()
    engine.unload()  # kills the stopped processes rather than waiting for them
    assert time.monotonic() - started < 60
    assert engine_children() == []
