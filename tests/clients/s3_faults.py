#!/usr/bin/env python3
"""S3 faults through a running `labeld serve`, with the real moto S3 server behind it.

The bucket `s3photos` of labeld is moto's bucket BUCKET. Over gRPC (grpcio, stubs from
grpc_client.py's generation):

  1. `oss://s3photos/chelsea.png` is labelled (the store works);
  2. moto is frozen (SIGSTOP: it accepts nothing, answers nothing); a call with a 3 s deadline
     gets DEADLINE_EXCEEDED from labeld within 4 s, and an inline photo is still labelled;
  3. moto thaws (SIGCONT): the same call is labelled again;
  4. the bucket disappears (boto3 deletes its objects and the bucket): NOT_FOUND naming it;
  5. the bucket comes back (created and filled again): labelled again.

Usage: python s3_faults.py --addr HOST:PORT --gen-dir DIR --moto-pid PID --endpoint URL
       --access-key AK --secret-key SK --region R --bucket BUCKET
Exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grpc_client import load_stubs  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for flag in ("--addr", "--gen-dir", "--endpoint", "--access-key", "--secret-key", "--region", "--bucket"):
        p.add_argument(flag, required=True)
    p.add_argument("--moto-pid", type=int, required=True)
    a = p.parse_args()
    pb2, pb2_grpc = load_stubs(Path(a.gen_dir))
    stub = pb2_grpc.ImageLabelsStub(grpc.insecure_channel(a.addr))
    photo = (REPO / "tests" / "fixtures" / "chelsea.png").read_bytes()
    failures = 0

    def check(name: str, ok: bool, detail: str) -> None:
        nonlocal failures
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")

    def call(timeout: float, uri: str = "oss://s3photos/chelsea.png"):
        start = time.monotonic()
        try:
            reply = stub.DetectImageLabels(pb2.DetectImageLabelsRequest(source_uri=uri, threshold=0.3), timeout=timeout)
            return "OK", [l.label_name for l in reply.labels], time.monotonic() - start
        except grpc.RpcError as e:
            return e.code().name, e.details(), time.monotonic() - start

    code, labels, _ = call(30)
    check("the S3 bucket works", code == "OK" and "Cat" in labels, f"{code} {labels}")

    os.kill(a.moto_pid, signal.SIGSTOP)
    try:
        code, detail, took = call(3)
        check("a frozen S3 endpoint fails within the 3 s deadline", code == "DEADLINE_EXCEEDED" and took < 4,
              f"{code} after {took:.2f} s ({detail})")
        inline = stub.DetectImageLabels(pb2.DetectImageLabelsRequest(image=photo, threshold=0.3), timeout=30)
        check("inline photos are labelled meanwhile", bool(inline.labels), f"{len(inline.labels)} labels")
    finally:
        os.kill(a.moto_pid, signal.SIGCONT)
    code, labels, took = call(30)
    check("S3 answers again: labelled again", code == "OK" and "Cat" in labels, f"{code} after {took:.2f} s")

    for var in [v for v in os.environ if v.startswith("AWS_")]:
        del os.environ[var]
    os.environ["AWS_CONFIG_FILE"] = os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    import boto3

    s3 = boto3.client("s3", endpoint_url=a.endpoint, aws_access_key_id=a.access_key,
                      aws_secret_access_key=a.secret_key, region_name=a.region)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=a.bucket)["Contents"]]
    saved = {k: s3.get_object(Bucket=a.bucket, Key=k)["Body"].read() for k in keys}
    for k in keys:
        s3.delete_object(Bucket=a.bucket, Key=k)
    s3.delete_bucket(Bucket=a.bucket)
    code, detail, took = call(30)
    check("a deleted bucket is NOT_FOUND, at once", code == "NOT_FOUND" and took < 5, f"{code} after {took:.2f} s: {detail}")
    s3.create_bucket(Bucket=a.bucket)
    for k, body in saved.items():
        s3.put_object(Bucket=a.bucket, Key=k, Body=body)
    code, labels, _ = call(30)
    check("the bucket is back: labelled again", code == "OK" and "Cat" in labels, f"{code} {labels}")

    print(f"s3_faults: {5 + 1 - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
