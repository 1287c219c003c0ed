#!/usr/bin/env python3
"""Drives labeld's OSS-compatible HTTP door with Alibaba Cloud's own Python SDKs.

Two official SDKs from PyPI, pinned in requirements.txt:
  * oss2 (the one in Alibaba's `image/labels` documentation), V4 (`ProviderAuthV4`) and V1 (`Auth`);
  * alibabacloud-oss-v2 (the new SDK, V4 by default).

Every check goes through the SDK's public API and asserts what the SDK itself reports: the result
object, or the exception class, HTTP status and OSS error code it raises. One line per check
(`ok` / `FAIL`), then `oss_client: N passed, M failed`; the exit status is 1 on any failure.

Configuration (flags, with environment defaults):
  --endpoint      OSS_ENDPOINT           http://127.0.0.1:PORT of `labeld serve --http-addr`
  --bucket        OSS_BUCKET             fixtures (served with --bucket fixtures=tests/fixtures)
  --fixtures-dir                         tests/fixtures (the folder of that bucket, for byte compares)
  --scratch-bucket / --scratch-dir       a second bucket (--bucket scratch=DIR); its folder must be
                                         writable: the GIF check writes a file there
  --region        OSS_REGION             cn-hangzhou (the server's --region)
  --s3-bucket     OSS_S3_BUCKET          a bucket served from S3 (--bucket s3photos=s3://labeld-photos)
                                         holding chelsea.png and pics/coffee.png; checks 13* skip without it
  OSS_ACCESS_KEY_ID / OSS_ACCESS_KEY_SECRET   the key the server knows (LABELD_ACCESS_KEY_ID/SECRET)

Usage against a running server:
  OSS_ACCESS_KEY_ID=ak OSS_ACCESS_KEY_SECRET=sk \\
    python tests/clients/oss_client.py --endpoint http://127.0.0.1:8080 --scratch-dir /tmp/scratch
"""

import argparse
import json
import os
import socket
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request

import oss2
import oss2.exceptions
import oss2.utils
from oss2.credentials import EnvironmentVariableCredentialsProvider, StaticCredentialsProvider

import alibabacloud_oss_v2 as oss
import requests.adapters

JSON_CONTENT_TYPE = "application/json;charset=utf-8"
LABEL_FIELDS = {"LabelName", "LabelConfidence", "LabelLevel", "ParentLabelName", "CentricScore", "Language"}
# A 1x1 GIF: a real image, of a format labeld refuses (JPEG and PNG only).
TINY_GIF = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
            b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")


class Failed(AssertionError):
    pass


def check(cond, what):
    if not cond:
        raise Failed(what)


# ---- answers ---------------------------------------------------------------------------------

def parse_labels(body, header_request_id, content_type=None):
    """Checks a label answer: exactly {"Labels":[...],"RequestId":"..."}, RequestId = x-oss-request-id."""
    doc = json.loads(body)
    check(isinstance(doc, dict) and set(doc) == {"Labels", "RequestId"},
          f"answer keys are {sorted(doc) if isinstance(doc, dict) else type(doc)}, wanted Labels and RequestId")
    check(header_request_id, "no x-oss-request-id header on the answer")
    check(doc["RequestId"] == header_request_id,
          f"RequestId {doc['RequestId']!r} != x-oss-request-id {header_request_id!r}")
    if content_type is not None:
        check(content_type == JSON_CONTENT_TYPE, f"Content-Type {content_type!r}, wanted {JSON_CONTENT_TYPE!r}")
    labels = doc["Labels"]
    check(isinstance(labels, list), "Labels is not a list")
    for label in labels:
        check(set(label) == LABEL_FIELDS, f"label fields {sorted(label)}, wanted {sorted(LABEL_FIELDS)}")
        check(0.0 <= label["LabelConfidence"] <= 1.0, f"confidence out of 0..1: {label}")
    confidences = [l["LabelConfidence"] for l in labels]
    check(confidences == sorted(confidences, reverse=True), f"labels not sorted by confidence: {confidences}")
    return labels


def has_animal_cat(labels):
    names = {(l["LabelName"], l["LabelLevel"], l["ParentLabelName"]) for l in labels}
    check(("Animal", 1, "") in names, f"no Animal (level 1) in {sorted(names)}")
    check(("Cat", 2, "Animal") in names, f"no Cat (level 2, parent Animal) in {sorted(names)}")


def show(labels, limit=6):
    shown = " > ".join(f"{l['LabelName']} {l['LabelConfidence']:.3f}" for l in labels[:limit])
    return shown + (f" (+{len(labels) - limit} more)" if len(labels) > limit else "")


def expect_oss2_error(call, klass, status, code):
    """Runs an oss2 call that must raise exactly `klass` with this status and code.

    Also checks what oss2 parsed from the <Error> body: RequestId equal to the x-oss-request-id
    header (oss2's e.request_id), a HostId, an EC equal to the x-oss-ec header.
    """
    try:
        result = call()
    except oss2.exceptions.OssError as e:
        check(type(e) is klass, f"oss2 raised {type(e).__name__} (status {e.status}, code {e.code!r}, "
                                f"message {e.message!r}), wanted {klass.__name__}")
        check(e.status == status, f"status {e.status}, wanted {status}")
        check(e.code == code, f"code {e.code!r}, wanted {code!r}")
        check(e.request_id, "no x-oss-request-id header on the error")
        check(e.details.get("RequestId") == e.request_id,
              f"<RequestId> {e.details.get('RequestId')!r} != x-oss-request-id {e.request_id!r}")
        check(e.details.get("HostId"), f"no <HostId> in {e.details}")
        check(e.details.get("Message"), f"no <Message> in {e.details}")
        check(e.ec, f"no <EC> in {e.details}")
        header_ec = e.headers.get("x-oss-ec")
        check(header_ec == e.ec, f"x-oss-ec header {header_ec!r} != <EC> {e.ec!r}")
        return e
    check(False, f"no error: oss2 returned {type(result).__name__} (status {getattr(result, 'status', '?')})")


def expect_v2_error(call, status, code):
    """A v2 SDK call that must fail: OperationError wrapping a ServiceError with this status and code."""
    try:
        result = call()
    except oss.exceptions.OperationError as e:
        inner = e.unwrap()
        check(isinstance(inner, oss.exceptions.ServiceError),
              f"v2 raised OperationError wrapping {type(inner).__name__}: {inner}")
        check(inner.status_code == status, f"status {inner.status_code}, wanted {status}")
        check(inner.code == code, f"code {inner.code!r}, wanted {code!r}")
        check(inner.request_id, "no request id on the v2 ServiceError")
        check(inner.ec, "no EC on the v2 ServiceError")
        return inner
    check(False, f"no error: v2 returned {type(result).__name__}")


def urlopen(url, headers=None):
    """GET with urllib; returns (status, headers, body) for 2xx and HTTP errors alike."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def xml_code(body):
    import xml.etree.ElementTree as ET
    root = ET.fromstring(body)
    check(root.tag == "Error", f"error root <{root.tag}>, wanted <Error>")
    return {child.tag: child.text or "" for child in root}


# ---- virtual-host style on a machine where *.localhost does not resolve ----------------------

def resolves(host):
    try:
        socket.getaddrinfo(host, None)
        return True
    except socket.gaierror:
        return False


class LoopbackAdapter(requests.adapters.HTTPAdapter):
    """A requests transport for the v2 SDK (`RequestsHttpClient(adapter=...)`): it connects to
    127.0.0.1 for `*.localhost` names the resolver does not know (RFC 6761 says they are
    loopback; glibc does not resolve them), keeping `Host: bucket.localhost:PORT` on the wire, as a
    resolving machine would send. It records each request's URL and Host header."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []

    def send(self, request, *args, **kwargs):
        parts = urllib.parse.urlsplit(request.url)
        host_header = parts.netloc
        if parts.hostname and parts.hostname.endswith(".localhost") and not resolves(parts.hostname):
            netloc = "127.0.0.1" + (f":{parts.port}" if parts.port else "")
            request.url = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
            request.headers["Host"] = host_header
        self.seen.append((request.url, request.headers.get("Host", host_header)))
        return super().send(request, *args, **kwargs)


# ---- the checks ------------------------------------------------------------------------------

class Checks:
    def __init__(self, args):
        self.args = args
        self.endpoint = args.endpoint.rstrip("/")
        self.port = urllib.parse.urlsplit(self.endpoint).port
        self.ak = os.environ["OSS_ACCESS_KEY_ID"]
        self.sk = os.environ["OSS_ACCESS_KEY_SECRET"]
        self.key = "chelsea.png"
        self.default_labels = None

    def bucket_v4(self, name=None, region=None, ak=None, sk=None):
        if ak is None and sk is None:
            auth = oss2.ProviderAuthV4(EnvironmentVariableCredentialsProvider())
        else:
            auth = oss2.ProviderAuthV4(StaticCredentialsProvider(ak or self.ak, sk or self.sk))
        return oss2.Bucket(auth, self.endpoint, name or self.args.bucket, region=region or self.args.region)

    def bucket_v1(self, sk=None):
        return oss2.Bucket(oss2.Auth(self.ak, sk or self.sk), self.endpoint, self.args.bucket)

    def v2_client(self, endpoint, adapter=None):
        cfg = oss.config.load_default()
        cfg.credentials_provider = oss.credentials.EnvironmentVariableCredentialsProvider()
        cfg.region = self.args.region
        cfg.endpoint = endpoint
        if adapter is not None:
            cfg.http_client = oss.transport.RequestsHttpClient(adapter=adapter)
        return oss.Client(cfg)

    # 1
    def c01_documented_sample(self):
        """oss2 ProviderAuthV4 + EnvironmentVariableCredentialsProvider, as in Alibaba's sample"""
        # The sample of https://www.alibabacloud.com/help/en/oss/image-label-detection, endpoint changed.
        auth = oss2.ProviderAuthV4(EnvironmentVariableCredentialsProvider())
        endpoint = self.endpoint
        region = self.args.region
        bucket = oss2.Bucket(auth, endpoint, self.args.bucket, region=region)
        key = self.key
        process = "image/labels"
        result = bucket.get_object(key, process=process)
        check(result.status == 200, f"status {result.status}")
        body = result.read()
        labels = parse_labels(body, result.request_id, result.headers.get("Content-Type"))
        has_animal_cat(labels)
        check(not result.headers.get("x-oss-hash-crc64ecma") or
              int(result.headers["x-oss-hash-crc64ecma"]) == result.client_crc,
              "x-oss-hash-crc64ecma on the JSON answer does not match its bytes")
        self.default_labels = labels
        return f"{show(labels)} | RequestId {result.request_id}"

    # 2
    def c02_oss2_v1(self):
        """oss2 V1 oss2.Auth(ak, sk)"""
        result = self.bucket_v1().get_object(self.key, process="image/labels")
        labels = parse_labels(result.read(), result.request_id, result.headers.get("Content-Type"))
        has_animal_cat(labels)
        return show(labels, 3)

    # 3
    def c03_v2_path_style(self):
        """alibabacloud-oss-v2 (V4 signer), endpoint 127.0.0.1: path style"""
        client = self.v2_client(self.endpoint)
        result = client.get_object(oss.GetObjectRequest(bucket=self.args.bucket, key=self.key,
                                                        process="image/labels"))
        check(result.status_code == 200, f"status {result.status_code}")
        labels = parse_labels(result.body.read(), result.request_id, result.headers.get("Content-Type"))
        has_animal_cat(labels)
        return f"{show(labels, 3)} | RequestId {result.request_id}"

    def c03b_v2_errors(self):
        """alibabacloud-oss-v2: missing key -> ServiceError NoSuchKey 404; thr_101 -> InvalidArgument 400"""
        client = self.v2_client(self.endpoint)
        e1 = expect_v2_error(lambda: client.get_object(oss.GetObjectRequest(
            bucket=self.args.bucket, key="no-such-image.png", process="image/labels")), 404, "NoSuchKey")
        e2 = expect_v2_error(lambda: client.get_object(oss.GetObjectRequest(
            bucket=self.args.bucket, key=self.key, process="image/labels,thr_101")), 400, "InvalidArgument")
        return f"{e1.code} ({e1.ec}), {e2.code} ({e2.ec})"

    # 4
    def c04_thresholds(self):
        """thr_85 is a subset of the default (thr_70); thr_70 equals the default; thr_0 has more; thr_NN filters thr_0"""
        bucket = self.bucket_v4()

        def get(process):
            r = bucket.get_object(self.key, process=process)
            return parse_labels(r.read(), r.request_id, r.headers.get("Content-Type"))

        default = get("image/labels")
        t70, t85, t0 = get("image/labels,thr_70"), get("image/labels,thr_85"), get("image/labels,thr_0")

        def keyed(labels):
            return {(l["LabelName"], l["LabelLevel"], l["ParentLabelName"]): l["LabelConfidence"] for l in labels}

        kd, k70, k85, k0 = keyed(default), keyed(t70), keyed(t85), keyed(t0)
        check(set(k70) == set(kd), f"thr_70 {sorted(k70)} != default {sorted(kd)}")
        check(set(k85) <= set(kd), f"thr_85 has labels the default lacks: {sorted(set(k85) - set(kd))}")
        check(all(abs(k85[k] - kd[k]) < 1e-4 for k in k85), "thr_85 confidences differ from the default's")
        check(all(c >= 0.85 for c in k85.values()), f"thr_85 returned a label under 0.85: {t85}")
        check(all(c >= 0.70 for c in kd.values()), f"the default returned a label under 0.70: {default}")
        check(set(kd) <= set(k0) and len(k0) > len(kd),
              f"thr_0 has {len(k0)} labels, default {len(kd)}: wanted a strict superset")
        # thr_NN keeps exactly the labels of thr_0 whose confidence reaches NN/100: checked at 85 and
        # just above the default answer's weakest label (so that one must go).
        cut = min(int(min(kd.values()) * 100) + 1, 100)
        for thr, got in ((85, k85), (cut, keyed(get(f"image/labels,thr_{cut}")))):
            want = {k for k, c in k0.items() if c >= thr / 100 + 1e-6}
            maybe = {k for k, c in k0.items() if abs(c - thr / 100) <= 1e-6}   # f32 rounding at the edge
            check(want <= set(got) <= want | maybe,
                  f"thr_{thr}: got {sorted(got)}, wanted the thr_0 labels >= {thr / 100}: {sorted(want)}")
        return f"thr_85 {len(k85)} <= default {len(kd)} < thr_0 {len(k0)}; thr_{cut} drops the weakest"

    # 5
    def c05_wrong_secret(self):
        """wrong secret: oss2 V4 and V1 raise SignatureDoesNotMatch (403)"""
        e4 = expect_oss2_error(lambda: self.bucket_v4(sk=self.sk + "x").get_object(self.key, process="image/labels"),
                               oss2.exceptions.SignatureDoesNotMatch, 403, "SignatureDoesNotMatch")
        e1 = expect_oss2_error(lambda: self.bucket_v1(sk=self.sk + "x").get_object(self.key, process="image/labels"),
                               oss2.exceptions.SignatureDoesNotMatch, 403, "SignatureDoesNotMatch")
        return f"V4 {e4.code} ({e4.ec}), V1 {e1.code}"

    def c05b_unknown_key_id(self):
        """unknown AccessKeyId: 403 InvalidAccessKeyId (oss2 has no class for it: ServerError)"""
        e = expect_oss2_error(lambda: self.bucket_v4(ak="LTAI-no-such-key", sk=self.sk).get_object(
            self.key, process="image/labels"), oss2.exceptions.ServerError, 403, "InvalidAccessKeyId")
        return f"{e.code}: {e.message}"

    def c05c_wrong_region(self):
        """V4 scoped to another region: 400 InvalidArgument"""
        e = expect_oss2_error(lambda: self.bucket_v4(region="cn-beijing").get_object(self.key, process="image/labels"),
                              oss2.exceptions.InvalidArgument, 400, "InvalidArgument")
        return e.message

    # 6
    def c06_anonymous(self):
        """anonymous oss2.AnonymousAuth(): AccessDenied (403)"""
        bucket = oss2.Bucket(oss2.AnonymousAuth(), self.endpoint, self.args.bucket)
        e = expect_oss2_error(lambda: bucket.get_object(self.key, process="image/labels"),
                              oss2.exceptions.AccessDenied, 403, "AccessDenied")
        e2 = expect_oss2_error(lambda: bucket.get_object(self.key),
                               oss2.exceptions.AccessDenied, 403, "AccessDenied")
        return f"{e.code}: {e.message} (plain GET too: {e2.code})"

    # 7
    def c07_thr_101(self):
        """image/labels,thr_101: InvalidArgument (400) naming thr"""
        e = expect_oss2_error(lambda: self.bucket_v4().get_object(self.key, process="image/labels,thr_101"),
                              oss2.exceptions.InvalidArgument, 400, "InvalidArgument")
        check(e.name == "thr", f"ArgumentName {e.name!r}, wanted 'thr'")
        check(e.value == "image/labels,thr_101", f"ArgumentValue {e.value!r}")
        return f"ArgumentName={e.name} ArgumentValue={e.value}: {e.message}"

    # 8
    def c08_gif(self):
        """a GIF in the scratch bucket: 400"""
        if not self.args.scratch_dir:
            raise Skip("no --scratch-dir given (run.sh serves one as --bucket scratch=DIR)")
        path = os.path.join(self.args.scratch_dir, "tiny.gif")
        with open(path, "wb") as f:
            f.write(TINY_GIF)
        bucket = self.bucket_v4(name=self.args.scratch_bucket)
        try:
            bucket.get_object("tiny.gif", process="image/labels")
        except oss2.exceptions.OssError as e:
            check(type(e) in (oss2.exceptions.InvalidArgument, oss2.exceptions.ServerError),
                  f"oss2 raised {type(e).__name__} {e.status} {e.code!r}")
            check(e.status == 400, f"status {e.status} ({e.code}: {e.message}), wanted 400")
            check(e.request_id and e.details.get("RequestId") == e.request_id, "RequestId mismatch")
            # The object itself is still served as bytes.
            data = bucket.get_object("tiny.gif").read()
            check(data == TINY_GIF, "plain GET of tiny.gif returned other bytes")
            return f"{type(e).__name__} {e.status} {e.code}: {e.message}"
        check(False, "no error for a GIF")

    # 9
    def c09_missing_key(self):
        """a missing key: NoSuchKey (404), with and without process"""
        e = expect_oss2_error(lambda: self.bucket_v4().get_object("no-such-image.png", process="image/labels"),
                              oss2.exceptions.NoSuchKey, 404, "NoSuchKey")
        expect_oss2_error(lambda: self.bucket_v4().get_object("no-such-image.png"),
                          oss2.exceptions.NoSuchKey, 404, "NoSuchKey")
        return e.message

    def c09b_missing_bucket(self):
        """a bucket the server does not serve: NoSuchBucket (404)"""
        e = expect_oss2_error(lambda: self.bucket_v4(name="no-such-bucket").get_object(self.key, process="image/labels"),
                              oss2.exceptions.NoSuchBucket, 404, "NoSuchBucket")
        return e.message

    # 10
    def c10_plain_get(self):
        """plain get_object (no process) returns the file's exact bytes; oss2 CRC check passes"""
        want = open(os.path.join(self.args.fixtures_dir, self.key), "rb").read()
        result = self.bucket_v4().get_object(self.key)
        data = result.read()
        check(data == want, f"got {len(data)} bytes, the file has {len(want)} (or they differ)")
        check(result.content_length in (None, len(want)), f"Content-Length {result.content_length}")
        oss2.utils.check_crc("get_object", result.client_crc, result.server_crc, result.request_id)
        # get_object_to_file checks CRC itself (raising InconsistentError), for the object and the JSON.
        with tempfile.TemporaryDirectory() as tmp:
            dest = os.path.join(tmp, "chelsea.png")
            self.bucket_v1().get_object_to_file(self.key, dest)
            check(open(dest, "rb").read() == want, "get_object_to_file (V1) wrote other bytes")
            dest_json = os.path.join(tmp, "labels.json")
            r = self.bucket_v4().get_object_to_file(self.key, dest_json, process="image/labels")
            parse_labels(open(dest_json, "rb").read(), r.request_id)
        crc = "x-oss-hash-crc64ecma " + ("absent" if result.server_crc is None else "matches")
        return f"{len(data)} bytes identical, {crc}"

    def c10b_head_object(self):
        """head_object: Content-Length of the file"""
        size = os.path.getsize(os.path.join(self.args.fixtures_dir, self.key))
        result = self.bucket_v4().head_object(self.key)
        check(result.status == 200 and result.content_length == size,
              f"status {result.status}, Content-Length {result.content_length}, file {size}")
        return f"{result.content_length} bytes"

    # 11
    def c11_presigned_v4(self):
        """V4 presigned URL (sign_url) via urllib; a tampered signature -> 403"""
        bucket = self.bucket_v4()
        url = bucket.sign_url("GET", self.key, 60, params={"x-oss-process": "image/labels"})
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
        check(query.get("x-oss-signature-version") == ["OSS4-HMAC-SHA256"], f"not a V4 URL: {url}")
        status, headers, body = urlopen(url)
        check(status == 200, f"status {status}: {body[:300]!r}")
        labels = parse_labels(body, headers.get("x-oss-request-id"), headers.get("Content-Type"))
        has_animal_cat(labels)
        sig = query["x-oss-signature"][0]
        bad = sig[:-1] + ("0" if sig[-1] != "0" else "1")
        tampered = url.replace("x-oss-signature=" + sig, "x-oss-signature=" + bad)
        check(tampered != url, "could not tamper with the URL")
        status, headers, body = urlopen(tampered)
        check(status == 403, f"tampered URL: status {status}, wanted 403: {body[:300]!r}")
        err = xml_code(body)
        check(err.get("Code") == "SignatureDoesNotMatch", f"tampered URL: <Code> {err.get('Code')!r}")
        check(err.get("RequestId") == headers.get("x-oss-request-id"), "tampered URL: RequestId mismatch")
        # Another process than the one signed is refused too (x-oss-process is in the signature).
        status, _, body = urlopen(url.replace("image%2Flabels", "image%2Flabels%2Cthr_0"))
        check(status == 403, f"URL with a changed x-oss-process: status {status}, wanted 403")
        return f"{show(labels, 2)}; tampered -> 403 {err['Code']}"

    def c11b_presigned_v1(self):
        """V1 presigned URL (oss2.Auth sign_url) works; expired one -> 403 AccessDenied"""
        bucket = self.bucket_v1()
        url = bucket.sign_url("GET", self.key, 60, params={"x-oss-process": "image/labels"})
        check("Signature=" in url and "OSSAccessKeyId=" in url, f"not a V1 URL: {url}")
        status, headers, body = urlopen(url)
        check(status == 200, f"status {status}: {body[:300]!r}")
        has_animal_cat(parse_labels(body, headers.get("x-oss-request-id"), headers.get("Content-Type")))
        expired = bucket.sign_url("GET", self.key, -60, params={"x-oss-process": "image/labels"})
        status, headers, body = urlopen(expired)
        check(status == 403, f"expired URL: status {status}, wanted 403: {body[:300]!r}")
        err = xml_code(body)
        check(err.get("Code") == "AccessDenied", f"expired URL: <Code> {err.get('Code')!r}")
        return f"expired -> 403 {err['Code']}: {err.get('Message')}"

    # 12
    def c12_virtual_host_v2(self):
        """virtual-host style: alibabacloud-oss-v2 with endpoint http://localhost:PORT"""
        host = f"{self.args.bucket}.localhost"
        note = "" if resolves(host) else f" ({host} does not resolve here: connected to 127.0.0.1 with Host kept)"
        adapter = LoopbackAdapter()
        client = self.v2_client(f"http://localhost:{self.port}", adapter=adapter)
        result = client.get_object(oss.GetObjectRequest(bucket=self.args.bucket, key=self.key,
                                                        process="image/labels"))
        check(adapter.seen, "the SDK sent nothing through the transport")
        url, host_header = adapter.seen[-1]
        check(host_header == f"{host}:{self.port}", f"Host {host_header!r}: the SDK did not use virtual-host style")
        check(urllib.parse.urlsplit(url).path == f"/{self.key}", f"path {urllib.parse.urlsplit(url).path!r}")
        check(result.status_code == 200, f"status {result.status_code}")
        labels = parse_labels(result.body.read(), result.request_id, result.headers.get("Content-Type"))
        has_animal_cat(labels)
        # A missing key the same way, to see the error path of virtual-host requests.
        e = expect_v2_error(lambda: client.get_object(oss.GetObjectRequest(
            bucket=self.args.bucket, key="no-such-image.png", process="image/labels")), 404, "NoSuchKey")
        return f"Host {host_header} GET {urllib.parse.urlsplit(url).path}: {show(labels, 2)}; missing -> {e.code}{note}"

    def c12b_virtual_host_presigned(self):
        """virtual-host style: v2 presigned V4 URL fetched with urllib and an explicit Host header"""
        client = self.v2_client(f"http://localhost:{self.port}")
        pre = client.presign(oss.GetObjectRequest(bucket=self.args.bucket, key=self.key, process="image/labels"))
        parts = urllib.parse.urlsplit(pre.url)
        check(parts.hostname == f"{self.args.bucket}.localhost", f"presigned URL is not virtual-host: {pre.url}")
        direct = urllib.parse.urlunsplit(parts._replace(netloc=f"127.0.0.1:{self.port}"))
        status, headers, body = urlopen(direct, {"Host": parts.netloc})
        check(status == 200, f"status {status}: {body[:300]!r}")
        labels = parse_labels(body, headers.get("x-oss-request-id"), headers.get("Content-Type"))
        has_animal_cat(labels)
        return f"GET {parts.path} Host {parts.netloc}: {show(labels, 2)}"

    # 13: an S3 bucket (`--bucket s3photos=s3://labeld-photos`) behind the same OSS door
    def s3_bucket(self):
        if not self.args.s3_bucket:
            raise Skip("no --s3-bucket given (run.sh serves one from moto as --bucket s3photos=s3://labeld-photos)")
        return self.bucket_v4(name=self.args.s3_bucket)

    def c13_s3_labels(self):
        """S3-backed bucket: oss2 V4 get_object('chelsea.png', process='image/labels') -> Animal > Cat"""
        result = self.s3_bucket().get_object(self.key, process="image/labels")
        check(result.status == 200, f"status {result.status}")
        labels = parse_labels(result.read(), result.request_id, result.headers.get("Content-Type"))
        has_animal_cat(labels)
        return f"{self.args.s3_bucket}/{self.key}: {show(labels, 3)} | RequestId {result.request_id}"

    def c13b_s3_nested_key(self):
        """S3-backed bucket: key 'pics/coffee.png' (a prefix in the key) -> Drink > Espresso"""
        key = "pics/coffee.png"
        result = self.s3_bucket().get_object(key, process="image/labels")
        check(result.status == 200, f"status {result.status}")
        labels = parse_labels(result.read(), result.request_id, result.headers.get("Content-Type"))
        names = {(l["LabelName"], l["LabelLevel"], l["ParentLabelName"]) for l in labels}
        check(("Drink", 1, "") in names, f"no Drink (level 1) in {sorted(names)}")
        check(("Espresso", 2, "Drink") in names, f"no Espresso (level 2, parent Drink) in {sorted(names)}")
        return f"{self.args.s3_bucket}/{key}: {show(labels, 3)}"

    def c13c_s3_missing_key(self):
        """S3-backed bucket: a missing key -> NoSuchKey (404), with and without process"""
        bucket = self.s3_bucket()
        e = expect_oss2_error(lambda: bucket.get_object("no-such-image.png", process="image/labels"),
                              oss2.exceptions.NoSuchKey, 404, "NoSuchKey")
        expect_oss2_error(lambda: bucket.get_object("pics/no-such-image.png"),
                          oss2.exceptions.NoSuchKey, 404, "NoSuchKey")
        return f"{e.code} ({e.ec}): {e.message}"

    def c13d_s3_plain_get(self):
        """S3-backed bucket: plain get_object (no process) returns the exact bytes of tests/fixtures/chelsea.png"""
        want = open(os.path.join(self.args.fixtures_dir, self.key), "rb").read()
        result = self.s3_bucket().get_object(self.key)
        data = result.read()
        check(result.status == 200, f"status {result.status}")
        check(data == want, f"got {len(data)} bytes, the file has {len(want)} (or they differ)")
        check(result.content_length in (None, len(want)), f"Content-Length {result.content_length}")
        oss2.utils.check_crc("get_object", result.client_crc, result.server_crc, result.request_id)
        crc = "x-oss-hash-crc64ecma " + ("absent" if result.server_crc is None else "matches")
        return f"{len(data)} bytes identical, {crc}"


class Skip(Exception):
    pass


def wait_ready(endpoint, tries, interval):
    for _ in range(tries):
        try:
            with urllib.request.urlopen(endpoint + "/health/ready", timeout=5) as resp:
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(interval)
    return False


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoint", default=os.environ.get("OSS_ENDPOINT", "http://127.0.0.1:8080"))
    p.add_argument("--bucket", default=os.environ.get("OSS_BUCKET", "fixtures"))
    p.add_argument("--region", default=os.environ.get("OSS_REGION", "cn-hangzhou"))
    p.add_argument("--fixtures-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
    p.add_argument("--scratch-bucket", default="scratch")
    p.add_argument("--scratch-dir", default=None)
    p.add_argument("--s3-bucket", default=os.environ.get("OSS_S3_BUCKET"),
                   help="a bucket the server serves from S3 (--bucket s3photos=s3://labeld-photos) holding "
                        "chelsea.png and pics/coffee.png; checks 13* are skipped without it")
    p.add_argument("--ready-tries", type=int, default=300)
    p.add_argument("--ready-interval", type=float, default=0.2)
    p.add_argument("--only", default=None, help="comma-separated check ids to run, e.g. c01,c11")
    args = p.parse_args()
    for var in ("OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET"):
        if not os.environ.get(var):
            sys.exit(f"oss_client: set {var} (the key the server was given as LABELD_{var[4:]})")
    args.endpoint = args.endpoint.rstrip("/")

    print(f"   oss2 {oss2.__version__}, alibabacloud-oss-v2 {oss.__version__ if hasattr(oss, '__version__') else '?'}"
          f", endpoint {args.endpoint}, bucket {args.bucket}, region {args.region}"
          + (f", S3-backed bucket {args.s3_bucket}" if args.s3_bucket else ", no S3-backed bucket"))
    if not wait_ready(args.endpoint, args.ready_tries, args.ready_interval):
        print(f"FAIL {args.endpoint}/health/ready never answered 200")
        print("oss_client: 0 passed, 1 failed")
        return 1

    checks = Checks(args)
    names = sorted(n for n in dir(checks) if n[:1] == "c" and n[1:3].isdigit())
    if args.only:
        wanted = {w.strip() for w in args.only.split(",")}
        names = [n for n in names if n.split("_")[0] in wanted]
    passed = failed = skipped = 0
    for name in names:
        fn = getattr(checks, name)
        label = f"{name.split('_')[0][1:]:>3} {fn.__doc__.strip()}"
        try:
            detail = fn()
        except Skip as e:
            skipped += 1
            print(f"skip {label}: {e}")
            continue
        except Failed as e:
            failed += 1
            print(f"FAIL {label}: {e}")
            continue
        except Exception as e:  # an SDK exception we did not expect is a failure too
            failed += 1
            print(f"FAIL {label}: unexpected {type(e).__module__}.{type(e).__name__}: {e}")
            if os.environ.get("OSS_CLIENT_TRACEBACK"):
                traceback.print_exc()
            continue
        passed += 1
        print(f"ok   {label}: {detail}")
    print(f"oss_client: {passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
