#!/usr/bin/env python3
"""gRPC interop client (grpcio, i.e. the gRPC C core) for the server-side test cases of
grpc/grpc doc/interop-test-descriptions.md.

    client.py HOST:PORT CASE [--stubs DIR]     run one case ("all" runs every case)
        [--cancel-on-stdin]    cancel_after_begin: cancel once a line arrives on stdin (the
                               test harness sends it when the server has the call), not at once
        [--deadline-ms N]      timeout_on_sleeping_server: this deadline instead of the spec's
                               1 ms, long enough for the call to reach the server and sleep there
    client.py --generate DIR                   only generate the Python stubs into DIR

The stubs are generated from proto/grpc/testing/*.proto with grpcio-tools into DIR (a fresh
temporary directory when --stubs is not given). Exits 0 when the case passed; otherwise prints
what differed and exits 1. Exit 2 means the client itself could not run (missing grpcio, ...).

What grpcio cannot observe: the per-message compressed flag of responses (server_compressed_*
assert sizes only here; tests/protocol/compression.rs checks the flags on the wire). grpcio also has no
switch to send one message of a compressing call uncompressed, but the C core sends a message
uncompressed when compression would not shrink it; client_compressed_streaming therefore makes
its "uncompressed" message incompressible (45904 random bytes instead of zeros; only the size
counts for the server's answer).
"""

import argparse
import gc
import os
import subprocess
import sys
import tempfile

PROTO_ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto"))
PROTOS = ["grpc/testing/empty.proto", "grpc/testing/messages.proto", "grpc/testing/test.proto"]

try:
    import grpc
except ImportError as e:  # a clear message rather than a traceback
    print(f"interop client: grpcio is not installed ({e}); run: pip install grpcio grpcio-tools", file=sys.stderr)
    sys.exit(2)


class Failure(Exception):
    """An assertion of a test case did not hold."""


def check(cond, what):
    if not cond:
        raise Failure(what)


def generate_stubs(out_dir):
    """Runs grpc_tools.protoc over the interop protos into out_dir."""
    os.makedirs(out_dir, exist_ok=True)
    cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_ROOT}",
           f"--python_out={out_dir}", f"--grpc_python_out={out_dir}"] + PROTOS
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"interop client: stub generation failed ({' '.join(cmd)}):\n{done.stderr}", file=sys.stderr)
        sys.exit(2)


def load_stubs(out_dir):
    """Imports the generated modules. They live in the package `grpc.testing` (the protos' own
    path), which is grafted onto the installed `grpc` package."""
    grpc.__path__.append(os.path.join(out_dir, "grpc"))
    from grpc.testing import empty_pb2, messages_pb2, test_pb2_grpc  # noqa: E402
    return empty_pb2, messages_pb2, test_pb2_grpc


def zeros(n):
    return b"\0" * n


def expect_error(code, fn, what):
    """Runs fn, which must fail with `code`; returns the RpcError."""
    try:
        fn()
    except grpc.RpcError as e:
        check(e.code() == code, f"{what}: want {code}, got {e.code()} ({e.details()!r})")
        return e
    raise Failure(f"{what}: want {code}, the call succeeded")


class Cases:
    def __init__(self, channel, stubs):
        self.channel = channel
        self.empty_pb2, self.pb, grpc_mod = stubs
        self.stub = grpc_mod.TestServiceStub(channel)
        self.unimplemented = grpc_mod.UnimplementedServiceStub(channel)
        self.cancel_on_stdin = False
        self.deadline_ms = 1.0

    # Helpers building the requests of the descriptions.
    def simple(self, **kw):
        return self.pb.SimpleRequest(response_type=self.pb.COMPRESSABLE, **kw)

    def payload(self, n):
        return self.pb.Payload(body=zeros(n))

    def params(self, size, compressed=None):
        p = self.pb.ResponseParameters(size=size)
        if compressed is not None:
            p.compressed.value = compressed
        return p

    def large_request(self, **kw):
        return self.simple(response_size=314159, payload=self.payload(271828), **kw)

    def check_large_response(self, resp, what):
        check(len(resp.payload.body) == 314159, f"{what}: payload is {len(resp.payload.body)} bytes, want 314159")
        check(resp.payload.body == zeros(314159), f"{what}: payload is not all zeros")

    # The cases, named as in the descriptions.
    def empty_unary(self):
        resp = self.stub.EmptyCall(self.empty_pb2.Empty())
        check(resp is not None and resp.ByteSize() == 0, f"EmptyCall answered {resp!r}")

    def large_unary(self):
        self.check_large_response(self.stub.UnaryCall(self.large_request()), "UnaryCall")

    def client_compressed_unary(self):
        probe = self.large_request(expect_compressed=self.pb.BoolValue(value=True))
        expect_error(grpc.StatusCode.INVALID_ARGUMENT,
                     lambda: self.stub.UnaryCall(probe, compression=grpc.Compression.NoCompression),
                     "probe (uncompressed, expect_compressed=true)")
        resp = self.stub.UnaryCall(probe, compression=grpc.Compression.Gzip)
        self.check_large_response(resp, "compressed call")
        plain = self.large_request(expect_compressed=self.pb.BoolValue(value=False))
        resp = self.stub.UnaryCall(plain, compression=grpc.Compression.NoCompression)
        self.check_large_response(resp, "uncompressed call")

    def server_compressed_unary(self):
        for compressed in (True, False):
            req = self.large_request(response_compressed=self.pb.BoolValue(value=compressed))
            self.check_large_response(self.stub.UnaryCall(req), f"response_compressed={compressed}")

    def client_streaming(self):
        sizes = [27182, 8, 1828, 45904]
        reqs = (self.pb.StreamingInputCallRequest(payload=self.payload(n)) for n in sizes)
        resp = self.stub.StreamingInputCall(reqs)
        check(resp.aggregated_payload_size == 74922,
              f"aggregated_payload_size is {resp.aggregated_payload_size}, want 74922")

    def client_compressed_streaming(self):
        yes, no = self.pb.BoolValue(value=True), self.pb.BoolValue(value=False)
        probe = self.pb.StreamingInputCallRequest(expect_compressed=yes, payload=self.payload(27182))
        expect_error(grpc.StatusCode.INVALID_ARGUMENT,
                     lambda: self.stub.StreamingInputCall(iter([probe]), compression=grpc.Compression.NoCompression),
                     "probe (uncompressed, expect_compressed=true)")
        first = self.pb.StreamingInputCallRequest(expect_compressed=yes, payload=self.payload(27182))
        # Incompressible, so that the C core sends it with the compressed flag clear.
        second = self.pb.StreamingInputCallRequest(expect_compressed=no,
                                                   payload=self.pb.Payload(body=os.urandom(45904)))
        resp = self.stub.StreamingInputCall(iter([first, second]), compression=grpc.Compression.Gzip)
        check(resp.aggregated_payload_size == 73086,
              f"aggregated_payload_size is {resp.aggregated_payload_size}, want 73086")

    def server_streaming(self):
        sizes = [31415, 9, 2653, 58979]
        req = self.pb.StreamingOutputCallRequest(response_type=self.pb.COMPRESSABLE,
                                                 response_parameters=[self.params(n) for n in sizes])
        got = [len(r.payload.body) for r in self.stub.StreamingOutputCall(req)]
        check(got == sizes, f"response sizes {got}, want {sizes}")

    def server_compressed_streaming(self):
        req = self.pb.StreamingOutputCallRequest(
            response_type=self.pb.COMPRESSABLE,
            response_parameters=[self.params(31415, True), self.params(92653, False)])
        responses = list(self.stub.StreamingOutputCall(req))
        got = [len(r.payload.body) for r in responses]
        check(got == [31415, 92653], f"response sizes {got}, want [31415, 92653]")
        check(all(r.payload.body == zeros(len(r.payload.body)) for r in responses), "payloads are not zeros")

    def ping_pong(self):
        steps = [(31415, 27182), (9, 8), (2653, 1828), (58979, 45904)]
        requests = Pipe()
        call = self.stub.FullDuplexCall(requests)
        got = []
        try:
            for size, body in steps:
                requests.put(self.pb.StreamingOutputCallRequest(
                    response_type=self.pb.COMPRESSABLE, response_parameters=[self.params(size)],
                    payload=self.payload(body)))
                # The reply must come before the next request is sent.
                resp = next(call)
                got.append(len(resp.payload.body))
        finally:
            requests.close()
        rest = list(call)
        check(got == [s for s, _ in steps], f"response sizes {got}, want {[s for s, _ in steps]}")
        check(rest == [], f"{len(rest)} responses after the half-close, want none")
        check(call.code() == grpc.StatusCode.OK, f"status {call.code()}, want OK")

    def empty_stream(self):
        call = self.stub.FullDuplexCall(iter([]))
        rest = list(call)
        check(rest == [], f"{len(rest)} responses, want none")
        check(call.code() == grpc.StatusCode.OK, f"status {call.code()}, want OK")

    def custom_metadata(self):
        initial = ("x-grpc-test-echo-initial", "test_initial_metadata_value")
        trailing = ("x-grpc-test-echo-trailing-bin", b"\xab\xab\xab")
        md = (initial, trailing)

        def check_md(header, trailer, what):
            check(initial in header, f"{what}: initial metadata {header}, want {initial}")
            check(trailing in trailer, f"{what}: trailing metadata {trailer}, want {trailing}")

        resp, call = self.stub.UnaryCall.with_call(self.large_request(), metadata=md)
        self.check_large_response(resp, "UnaryCall")
        check_md(call.initial_metadata(), call.trailing_metadata(), "UnaryCall")

        req = self.pb.StreamingOutputCallRequest(response_type=self.pb.COMPRESSABLE,
                                                 response_parameters=[self.params(314159)],
                                                 payload=self.payload(271828))
        call = self.stub.FullDuplexCall(iter([req]), metadata=md)
        responses = list(call)
        check([len(r.payload.body) for r in responses] == [314159], "FullDuplexCall: want one 314159-byte response")
        check(call.code() == grpc.StatusCode.OK, f"FullDuplexCall: status {call.code()}, want OK")
        check_md(call.initial_metadata(), call.trailing_metadata(), "FullDuplexCall")

    def _echo_status(self, code, message, full_duplex):
        status = self.pb.EchoStatus(code=code, message=message)
        e = expect_error(grpc.StatusCode.UNKNOWN, lambda: self.stub.UnaryCall(self.simple(response_status=status)),
                         "UnaryCall")
        check(e.details() == message, f"UnaryCall: message {e.details()!r}, want {message!r}")
        if full_duplex:
            req = self.pb.StreamingOutputCallRequest(response_status=status)
            e = expect_error(grpc.StatusCode.UNKNOWN, lambda: list(self.stub.FullDuplexCall(iter([req]))),
                             "FullDuplexCall")
            check(e.details() == message, f"FullDuplexCall: message {e.details()!r}, want {message!r}")

    def status_code_and_message(self):
        self._echo_status(2, "test status message", full_duplex=True)

    def special_status_message(self):
        self._echo_status(2, "\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001f608\t\n",
                          full_duplex=False)

    def unimplemented_method(self):
        call = self.channel.unary_unary("/grpc.testing.TestService/UnimplementedCall",
                                        request_serializer=self.empty_pb2.Empty.SerializeToString,
                                        response_deserializer=self.empty_pb2.Empty.FromString)
        expect_error(grpc.StatusCode.UNIMPLEMENTED, lambda: call(self.empty_pb2.Empty()), "UnimplementedCall")

    def unimplemented_service(self):
        expect_error(grpc.StatusCode.UNIMPLEMENTED,
                     lambda: self.unimplemented.UnimplementedCall(self.empty_pb2.Empty()),
                     "UnimplementedService/UnimplementedCall")

    def cancel_after_begin(self):
        requests = Pipe()  # never sends anything
        future = self.stub.StreamingInputCall.future(requests)
        if self.cancel_on_stdin:
            sys.stdin.readline()
        future.cancel()
        requests.close()
        check(future.cancelled(), "the call was not cancelled")
        check(future.code() == grpc.StatusCode.CANCELLED, f"status {future.code()}, want CANCELLED")

    def cancel_after_first_response(self):
        requests = Pipe()
        call = self.stub.FullDuplexCall(requests)
        try:
            requests.put(self.pb.StreamingOutputCallRequest(
                response_type=self.pb.COMPRESSABLE, response_parameters=[self.params(31415)],
                payload=self.payload(27182)))
            resp = next(call)
            check(len(resp.payload.body) == 31415, f"first response is {len(resp.payload.body)} bytes, want 31415")
            call.cancel()
        finally:
            requests.close()
        check(call.code() == grpc.StatusCode.CANCELLED, f"status {call.code()}, want CANCELLED")

    def timeout_on_sleeping_server(self):
        requests = Pipe()
        requests.put(self.pb.StreamingOutputCallRequest(payload=self.payload(27182)))
        call = self.stub.FullDuplexCall(requests, timeout=self.deadline_ms / 1000)
        try:
            expect_error(grpc.StatusCode.DEADLINE_EXCEEDED, lambda: list(call), "FullDuplexCall")
        finally:
            requests.close()


CASES = [
    "empty_unary", "large_unary", "client_compressed_unary", "server_compressed_unary",
    "client_streaming", "client_compressed_streaming", "server_streaming",
    "server_compressed_streaming", "ping_pong", "empty_stream", "custom_metadata",
    "status_code_and_message", "special_status_message", "unimplemented_method",
    "unimplemented_service", "cancel_after_begin", "cancel_after_first_response",
    "timeout_on_sleeping_server",
]


class Pipe:
    """A request iterator fed one message at a time (for calls that must wait between sends)."""

    _END = object()

    def __init__(self):
        import queue
        self._queue = queue.Queue()

    def put(self, msg):
        self._queue.put(msg)

    def close(self):
        self._queue.put(self._END)

    def __iter__(self):
        return self

    def __next__(self):
        item = self._queue.get()
        if item is self._END:
            raise StopIteration
        return item


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", nargs="?", help="server address, HOST:PORT")
    parser.add_argument("case", nargs="?", choices=CASES + ["all"], help="test case to run")
    parser.add_argument("--stubs", help="directory of generated stubs (generated there if missing)")
    parser.add_argument("--generate", metavar="DIR", help="only generate the stubs into DIR")
    parser.add_argument("--tls-ca", metavar="PEM", help="speak TLS, trusting this CA (grpc.ssl_channel_credentials)")
    parser.add_argument("--tls-server-name", metavar="NAME", help="check the server certificate against NAME")
    parser.add_argument("--cancel-on-stdin", action="store_true",
                        help="cancel_after_begin: cancel when a line arrives on stdin")
    parser.add_argument("--deadline-ms", type=float, default=1.0,
                        help="timeout_on_sleeping_server's deadline (the spec's is 1 ms)")
    args = parser.parse_args()

    if args.generate:
        generate_stubs(args.generate)
        return 0
    if not args.target or not args.case:
        parser.error("HOST:PORT and CASE are required")

    stubs_dir = args.stubs or tempfile.mkdtemp(prefix="interop-stubs-")
    if not os.path.exists(os.path.join(stubs_dir, "grpc", "testing", "test_pb2_grpc.py")):
        generate_stubs(stubs_dir)
    stubs = load_stubs(stubs_dir)

    names = CASES if args.case == "all" else [args.case]
    failed = 0
    if args.tls_ca:
        with open(args.tls_ca, "rb") as f:
            credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
        options = [("grpc.ssl_target_name_override", args.tls_server_name)] if args.tls_server_name else []
        channel = grpc.secure_channel(args.target, credentials, options=options)
    else:
        channel = grpc.insecure_channel(args.target)
    with channel:
        cases = Cases(channel, stubs)
        cases.cancel_on_stdin, cases.deadline_ms = args.cancel_on_stdin, args.deadline_ms
        for name in names:
            try:
                getattr(cases, name)()
                print(f"{name}: PASS")
            except Failure as e:
                failed += 1
                print(f"{name}: FAIL: {e}", file=sys.stderr)
            except grpc.RpcError as e:
                failed += 1
                print(f"{name}: FAIL: unexpected RPC error {e.code()}: {e.details()!r}", file=sys.stderr)
        # Collect finished calls while grpc's threads still run: a call object collected during
        # interpreter shutdown can deadlock on a lock held by a frozen daemon thread.
        del cases
        gc.collect()
    return 1 if failed else 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # The verdict is in; skip interpreter finalization, where grpcio's call finalizers can hang.
    os._exit(code)
