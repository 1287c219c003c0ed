#!/usr/bin/env python3
"""A real gRPC client for a running `labeld serve`, written against the official Python stack.

It uses `grpcio`, with stubs generated from proto/labeld/v1/labels.proto by `grpcio-tools` at run
time (never committed), and `grpcio-health-checking` for the health service. It checks what a
client outside the Rust code base sees:

  * health: waits (bounded retries) until grpc.health.v1 reports SERVING for labeld.v1.ImageLabels;
  * GetModelInfo: the model, its taxonomy counts and the serving settings;
  * DetectImageLabels: chelsea.png (a cat) at threshold 0.5 in en and zh-Hans gives the
    Animal > Cat hierarchy with sane confidences, levels, parents and CentricScores;
  * errors: a corrupt image and an out-of-range threshold answer INVALID_ARGUMENT;
  * DetectImageLabelsStream: one answer per request, matched by request_id, a bad image answering
    with `error` set while the stream goes on.

Usage (tests/clients/run.sh sets all of this up):

    python tests/clients/grpc_client.py --addr 127.0.0.1:50051 [--gen-dir DIR] [--expect-model efficientnet-lite0]

Prints a short summary; exits 1 when any check fails, 2 when the server never became ready.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
SERVICE = "labeld.v1.ImageLabels"
CALL_TIMEOUT_S = 60.0
EPS = 1e-6


# ---------------------------------------------------------------------------------------------
# Stubs, generated at run time


def generate_stubs(proto_root: Path, out_dir: Path) -> None:
    """Runs grpcio-tools' protoc on labeld/v1/labels.proto into out_dir (replacing what was there)."""
    from grpc_tools import protoc  # imported here: only the generation step needs grpcio-tools

    out_dir.mkdir(parents=True, exist_ok=True)
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{proto_root}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(proto_root / "labeld" / "v1" / "labels.proto"),
        ]
    )
    if rc != 0:
        raise SystemExit(f"grpc_tools.protoc failed with exit code {rc}")


def load_stubs(gen_dir: Path):
    sys.path.insert(0, str(gen_dir))
    pb2 = importlib.import_module("labeld.v1.labels_pb2")
    pb2_grpc = importlib.import_module("labeld.v1.labels_pb2_grpc")
    return pb2, pb2_grpc


# ---------------------------------------------------------------------------------------------
# Checks


class CheckFailed(AssertionError):
    pass


def check(cond: bool, what: str) -> None:
    if not cond:
        raise CheckFailed(what)


def fmt_labels(labels, limit: int = 4) -> str:
    shown = [f"{l.label_name} {l.label_confidence:.3f} (L{l.label_level})" for l in labels[:limit]]
    more = f" +{len(labels) - limit} more" if len(labels) > limit else ""
    return " > ".join(shown) + more if shown else "(no labels)"


def check_labels(labels, *, language: str, threshold: float, where: str) -> None:
    """What every answer must satisfy, whatever the image (the contract in labels.proto)."""
    by_name = {}
    for l in labels:
        check(l.label_name != "", f"{where}: a label has an empty name")
        check(l.label_name not in by_name, f"{where}: label {l.label_name!r} appears twice")
        by_name[l.label_name] = l
        check(
            math.isfinite(l.label_confidence) and threshold - EPS <= l.label_confidence <= 1 + EPS,
            f"{where}: {l.label_name}: confidence {l.label_confidence} not in [{threshold}, 1]",
        )
        check(
            math.isfinite(l.centric_score) and -EPS <= l.centric_score <= 1 + EPS,
            f"{where}: {l.label_name}: CentricScore {l.centric_score} not in [0, 1]",
        )
        check(l.label_level in (1, 2, 3), f"{where}: {l.label_name}: level {l.label_level} not 1..3")
        check(l.language == language, f"{where}: {l.label_name}: language {l.language!r}, wanted {language!r}")
    confidences = [l.label_confidence for l in labels]
    check(
        all(a >= b for a, b in zip(confidences, confidences[1:])),
        f"{where}: labels not sorted by confidence, most confident first: {confidences}",
    )
    for l in labels:
        if l.label_level == 1:
            check(l.parent_label_name == "", f"{where}: category {l.label_name} has parent {l.parent_label_name!r}")
            continue
        parent = by_name.get(l.parent_label_name)
        check(parent is not None, f"{where}: {l.label_name}'s parent {l.parent_label_name!r} is not returned")
        check(
            parent.label_level == l.label_level - 1,
            f"{where}: {l.label_name} (L{l.label_level}) has parent {parent.label_name} at L{parent.label_level}",
        )
        check(
            parent.label_confidence >= l.label_confidence - EPS,
            f"{where}: parent {parent.label_name} ({parent.label_confidence}) less confident than "
            f"{l.label_name} ({l.label_confidence})",
        )


def check_hierarchy(labels, category: str, child: str, where: str) -> None:
    """`category` is returned at level 1 and `child` at level 2 under it."""
    by_name = {l.label_name: l for l in labels}
    names = [l.label_name for l in labels]
    check(category in by_name, f"{where}: no {category!r} among {names}")
    check(child in by_name, f"{where}: no {child!r} among {names}")
    c, k = by_name[category], by_name[child]
    check(c.label_level == 1 and c.parent_label_name == "", f"{where}: {category} is not a category: {c}")
    check(k.label_level == 2, f"{where}: {child} is at level {k.label_level}, wanted 2")
    check(k.parent_label_name == category, f"{where}: {child}'s parent is {k.parent_label_name!r}, wanted {category!r}")
    check(c.label_confidence >= k.label_confidence - EPS, f"{where}: {category} less confident than {child}")


def check_timings(resp, where: str) -> None:
    t = resp.timings
    check(resp.HasField("timings"), f"{where}: no timings")
    check(t.total_us > 0, f"{where}: total_us is {t.total_us}")
    check(t.total_us >= t.inference_us, f"{where}: total_us {t.total_us} < inference_us {t.inference_us}")
    check(t.batch_size >= 1, f"{where}: batch_size is {t.batch_size}")


def expect_code(call, code: grpc.StatusCode, where: str) -> grpc.RpcError:
    try:
        call()
    except grpc.RpcError as e:  # a grpc.Call as well: .code(), .details()
        check(e.code() == code, f"{where}: got {e.code().name} ({e.details()!r}), wanted {code.name}")
        return e
    raise CheckFailed(f"{where}: the call succeeded, wanted {code.name}")


# ---------------------------------------------------------------------------------------------


class Client:
    def __init__(self, args, pb2, pb2_grpc):
        self.args = args
        self.pb2 = pb2
        self.channel = grpc.insecure_channel(args.addr)
        self.stub = pb2_grpc.ImageLabelsStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        fixtures = Path(args.fixtures)
        self.chelsea = (fixtures / "chelsea.png").read_bytes()
        self.coffee = (fixtures / "coffee.png").read_bytes()
        self.astronaut = (fixtures / "astronaut.png").read_bytes()
        self.rocket = (fixtures / "rocket.jpg").read_bytes()
        # A PNG signature and header, then garbage: sniffed as PNG, fails to decode.
        self.corrupt = self.chelsea[:64] + b"\x00garbage, not a zlib stream\xff" * 8
        self.passed = 0
        self.failed = 0

    def run(self, name: str, fn) -> None:
        start = time.monotonic()
        try:
            summary = fn()
        except CheckFailed as e:
            self.failed += 1
            print(f"  FAIL {name}: {e}")
            return
        except grpc.RpcError as e:
            self.failed += 1
            print(f"  FAIL {name}: unexpected gRPC error {e.code().name}: {e.details()}")
            return
        except Exception:  # a bug in this script or a broken answer: report it as a failure
            self.failed += 1
            print(f"  FAIL {name}: unexpected exception")
            traceback.print_exc(file=sys.stdout)
            return
        self.passed += 1
        ms = (time.monotonic() - start) * 1000
        print(f"  ok   {name:<22} {summary}  [{ms:.0f} ms]")

    # -- health ----------------------------------------------------------------------------

    def wait_serving(self) -> str:
        """Checks health until SERVING, at most `--ready-tries` times, `--ready-interval` apart."""
        last = "no answer"
        start = time.monotonic()
        for attempt in range(1, self.args.ready_tries + 1):
            try:
                resp = self.health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=2.0)
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return f"{SERVICE} SERVING after {attempt} check(s), {time.monotonic() - start:.1f} s"
                last = status
            except grpc.RpcError as e:
                last = f"{e.code().name}: {e.details()}"
            time.sleep(self.args.ready_interval)
        raise CheckFailed(f"not SERVING after {self.args.ready_tries} checks; last answer: {last}")

    def health_others(self) -> str:
        whole = self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=CALL_TIMEOUT_S)
        check(whole.status == health_pb2.HealthCheckResponse.SERVING, f"server-wide health is {whole.status}")
        expect_code(
            lambda: self.health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=CALL_TIMEOUT_S),
            grpc.StatusCode.NOT_FOUND,
            "health of an unknown service",
        )
        return 'service "" SERVING, unknown service NOT_FOUND'

    # -- GetModelInfo ----------------------------------------------------------------------

    def model_info(self) -> str:
        a = self.args
        info = self.stub.GetModelInfo(self.pb2.GetModelInfoRequest(), timeout=CALL_TIMEOUT_S)
        check(info.model == a.expect_model, f"model {info.model!r}, wanted {a.expect_model!r}")
        sizes = {"efficientnet-lite0": 224, "efficientnet-lite2": 260}
        if info.model in sizes:
            check(info.input_size == sizes[info.model], f"input_size {info.input_size} for {info.model}")
        check(info.device == a.expect_device, f"device {info.device!r}, wanted {a.expect_device!r}")
        check(info.class_count == 1000, f"class_count {info.class_count}, wanted 1000 (ImageNet-1k)")
        check(info.category_count > 0 and info.group_count > 0, f"categories {info.category_count}, groups {info.group_count}")
        # Every class is a label, plus one per category and group.
        check(
            info.label_count == info.class_count + info.category_count + info.group_count,
            f"label_count {info.label_count} != classes {info.class_count} + categories "
            f"{info.category_count} + groups {info.group_count}",
        )
        check(info.taxonomy_version != "", "empty taxonomy_version")
        check(info.version != "", "empty version")
        for field in ("max_batch", "max_delay_us", "max_queue", "model_workers", "decode_workers"):
            want = getattr(a, f"expect_{field}")
            got = getattr(info, field)
            if want is not None:
                check(got == want, f"{field} {got}, wanted {want}")
            else:
                check(got > 0 or field == "max_delay_us", f"{field} is {got}")
        return (
            f"{info.model} {info.input_size}px on {info.device}, {info.class_count} classes / "
            f"{info.label_count} labels ({info.category_count} categories, {info.group_count} groups), "
            f"taxonomy {info.taxonomy_version}, batch {info.max_batch} / {info.max_delay_us} us / "
            f"queue {info.max_queue}, {info.model_workers} model + {info.decode_workers} decode workers, "
            f"v{info.version}"
        )

    # -- DetectImageLabels -----------------------------------------------------------------

    def detect(self, image: bytes, **kw):
        req = self.pb2.DetectImageLabelsRequest(image=image, **kw)
        return self.stub.DetectImageLabels(req, timeout=CALL_TIMEOUT_S)

    def chelsea_en(self) -> str:
        resp = self.detect(self.chelsea, threshold=0.5, language="en", request_id="py-chelsea-en")
        where = "chelsea.png en"
        check(resp.request_id == "py-chelsea-en", f"{where}: request_id {resp.request_id!r} not echoed")
        check(resp.model == self.args.expect_model, f"{where}: model {resp.model!r}")
        check(not resp.HasField("error"), f"{where}: error set on a unary answer: {resp.error}")
        check_labels(resp.labels, language="en", threshold=0.5, where=where)
        check_hierarchy(resp.labels, "Animal", "Cat", where)
        check_timings(resp, where)
        self.en_labels = list(resp.labels)
        return f"{fmt_labels(resp.labels)}  (id {resp.request_id}, {resp.timings.total_us / 1000:.0f} ms in server)"

    def chelsea_zh(self) -> str:
        resp = self.detect(self.chelsea, threshold=0.5, language="zh-Hans", request_id="py-chelsea-zh")
        where = "chelsea.png zh-Hans"
        check(resp.request_id == "py-chelsea-zh", f"{where}: request_id {resp.request_id!r} not echoed")
        check_labels(resp.labels, language="zh-Hans", threshold=0.5, where=where)
        check_hierarchy(resp.labels, "动物", "猫", where)
        en = getattr(self, "en_labels", None)
        if en is not None:
            # Same image, same model: the same labels in the same order, only the names differ.
            check(len(en) == len(resp.labels), f"{where}: {len(resp.labels)} labels, en had {len(en)}")
            for e, z in zip(en, resp.labels):
                check(abs(e.label_confidence - z.label_confidence) < 1e-3, f"{where}: {z.label_name} vs {e.label_name}: confidences differ")
                check(e.label_level == z.label_level, f"{where}: {z.label_name} vs {e.label_name}: levels differ")
        return fmt_labels(resp.labels)

    def defaults(self) -> str:
        # No request_id: the server makes one. Default threshold 0.70: the cat still has Animal > Cat.
        resp = self.detect(self.chelsea)
        rid = resp.request_id
        check(0 < len(rid) <= 128 and rid.isascii() and rid.isprintable(), f"server-made request_id {rid!r}")
        check_labels(resp.labels, language="en", threshold=0.7, where="chelsea.png defaults")
        check_hierarchy(resp.labels, "Animal", "Cat", "chelsea.png defaults")
        one = self.detect(self.chelsea, threshold=0.5, max_labels=1)
        check([l.label_name for l in one.labels] == ["Animal"], f"max_labels=1 gave {fmt_labels(one.labels)}")
        return f"server-made request_id {rid}; max_labels=1 -> {fmt_labels(one.labels)}"

    def invalid_argument(self) -> str:
        e = expect_code(lambda: self.detect(self.corrupt, threshold=0.5), grpc.StatusCode.INVALID_ARGUMENT, "corrupt PNG")
        expect_code(lambda: self.detect(b"plain text", threshold=0.5), grpc.StatusCode.INVALID_ARGUMENT, "not an image")
        expect_code(lambda: self.detect(self.chelsea, threshold=1.5), grpc.StatusCode.INVALID_ARGUMENT, "threshold 1.5")
        expect_code(lambda: self.detect(self.chelsea, language="fr"), grpc.StatusCode.INVALID_ARGUMENT, "language fr")
        return f"corrupt PNG, text, threshold 1.5, language fr -> INVALID_ARGUMENT (corrupt PNG: {e.details()!r})"

    # -- DetectImageLabelsStream -----------------------------------------------------------

    def stream(self) -> str:
        pb2 = self.pb2
        sent = [
            ("s-chelsea", self.chelsea, "en"),
            ("s-coffee", self.coffee, "en"),
            ("s-corrupt", self.corrupt, "en"),
            ("s-astronaut", self.astronaut, "en"),
            ("s-rocket", self.rocket, "en"),
            ("s-chelsea-zh", self.chelsea, "zh-Hans"),
        ]
        requests = (
            pb2.DetectImageLabelsRequest(image=img, threshold=0.5, language=lang, request_id=rid)
            for rid, img, lang in sent
        )
        answers = list(self.stub.DetectImageLabelsStream(requests, timeout=CALL_TIMEOUT_S))
        ids = [a.request_id for a in answers]
        check(len(answers) == len(sent), f"{len(answers)} answers to {len(sent)} requests: {ids}")
        check(sorted(ids) == sorted(rid for rid, _, _ in sent), f"answer ids {ids} do not match the requests")
        by_id = {a.request_id: a for a in answers}
        for rid, _, lang in sent:
            a = by_id[rid]
            if rid == "s-corrupt":
                check(a.HasField("error"), f"{rid}: no error for a corrupt image")
                check(a.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0], f"{rid}: error code {a.error.code}, wanted 3")
                check(a.error.reason != "" and a.error.message != "", f"{rid}: error without reason/message: {a.error}")
                check(len(a.labels) == 0, f"{rid}: labels on a failed request")
                continue
            check(not a.HasField("error"), f"{rid}: unexpected error {a.error.reason}: {a.error.message}")
            check_labels(a.labels, language=lang, threshold=0.5, where=rid)
            check_timings(a, rid)
        check_hierarchy(by_id["s-chelsea"].labels, "Animal", "Cat", "s-chelsea")
        check_hierarchy(by_id["s-chelsea-zh"].labels, "动物", "猫", "s-chelsea-zh")
        check_hierarchy(by_id["s-coffee"].labels, "Drink", "Espresso", "s-coffee")
        batches = sorted({a.timings.batch_size for a in answers if not a.HasField("error")})
        return (
            f"{len(sent)} requests -> {len(answers)} answers, completion order {ids}; "
            f"s-corrupt -> error {by_id['s-corrupt'].error.reason}; batch sizes seen {batches}"
        )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--addr", required=True, help="host:port of labeld serve")
    p.add_argument("--gen-dir", help="where to generate the stubs [default: a fresh temporary folder]")
    p.add_argument("--proto-root", default=str(REPO / "proto"))
    p.add_argument("--fixtures", default=str(REPO / "tests" / "fixtures"))
    p.add_argument("--ready-tries", type=int, default=300, help="health checks before giving up")
    p.add_argument("--ready-interval", type=float, default=0.2, help="seconds between health checks")
    p.add_argument("--expect-model", default="efficientnet-lite0")
    p.add_argument("--expect-device", default="cpu")
    for field in ("max_batch", "max_delay_us", "max_queue", "model_workers", "decode_workers"):
        p.add_argument(f"--expect-{field.replace('_', '-')}", type=int, dest=f"expect_{field}")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="labeld-stubs-") as tmp:
        gen_dir = Path(args.gen_dir) if args.gen_dir else Path(tmp)
        generate_stubs(Path(args.proto_root), gen_dir)
        pb2, pb2_grpc = load_stubs(gen_dir)

        print(f"labeld gRPC client: grpcio {grpc.__version__}, {args.addr}, stubs generated in {gen_dir}")
        c = Client(args, pb2, pb2_grpc)
        c.run("health: wait SERVING", c.wait_serving)
        if c.failed:
            print("grpc_client: the server never became ready; nothing else checked")
            return 2
        c.run("health: other services", c.health_others)
        c.run("GetModelInfo", c.model_info)
        c.run("chelsea.png en", c.chelsea_en)
        c.run("chelsea.png zh-Hans", c.chelsea_zh)
        c.run("defaults, max_labels", c.defaults)
        c.run("INVALID_ARGUMENT", c.invalid_argument)
        c.run("stream of 6 images", c.stream)
        c.channel.close()
        print(f"grpc_client: {c.passed} passed, {c.failed} failed")
        return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
