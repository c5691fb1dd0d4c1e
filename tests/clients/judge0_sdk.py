"""Judge0's official Python SDK (`judge0` on PyPI) against Kiln's Judge0 face: builds a client
(which reads /languages and /config_info), runs python with stdin and expected output (Accepted,
then Wrong Answer), C, a compile error, a runtime error and a time limit, each to its status;
then async_run plus wait (the SDK's polling of GET /submissions/{token}) and a batch through
/submissions/batch. Env: KILN_BASE, KILN_TOKEN. Exits non-zero on the first mismatch."""
import os

import judge0
from judge0 import Status, Submission

# The SDK joins its routes to the endpoint, so the face's prefix is part of it; Judge0's own
# header carries the token.
client = judge0.Client(os.environ["KILN_BASE"] + "/judge0", {"X-Auth-Token": os.environ["KILN_TOKEN"]})
ids = {lang.id for lang in client.languages}
print("languages:", sorted(ids))
assert {71, 50, 52, 54}.issubset(ids), ids
assert client.config.max_submission_batch_size == 20, client.config
assert client.version == "1.13.1"


def run(**kw):
    s = judge0.run(client=client, submissions=Submission(**kw))
    print(s.status, repr(s.stdout), repr(s.stderr), repr(s.compile_output), s.message, s.time, s.memory)
    return s


py = judge0.LanguageAlias.PYTHON
# The SDK's model decodes any text that happens to be valid base64 ("kiln" is), so stdin here
# has a space.
s = run(source_code="print('hello', input())", language=py, stdin="the kiln", expected_output="hello the kiln")
assert s.status == Status.ACCEPTED, s.status
assert s.stdout == "hello the kiln\n", s.stdout
assert s.stderr is None and s.compile_output is None, (s.stderr, s.compile_output)
assert isinstance(s.time, float) and s.memory > 0, (s.time, s.memory)
assert s.created_at is not None and s.finished_at is not None and s.finished_at >= s.created_at

s = run(source_code="print('hello', input())", language=71, stdin="the kiln", expected_output="goodbye")
assert s.status == Status.WRONG_ANSWER, s.status

s = run(source_code='#include <stdio.h>\nint main(){char b[64];scanf("%63s",b);printf("hello, %s\\n",b);return 0;}',
        language=judge0.LanguageAlias.C, stdin="Judge0", expected_output="hello, Judge0")
assert s.status == Status.ACCEPTED, s.status
assert s.stdout == "hello, Judge0\n"

s = run(source_code="int main(){ return x; }", language=50)
assert s.status == Status.COMPILATION_ERROR, s.status
assert s.compile_output and "x" in s.compile_output, s.compile_output
assert s.stdout is None

s = run(source_code="import sys\nsys.stderr.write('boom\\n')\nsys.exit(3)", language=71)
assert s.status == Status.RUNTIME_ERROR_NZEC, s.status
assert s.stderr == "boom\n" and s.exit_code == 3, (s.stderr, s.exit_code)

s = run(source_code='#include <signal.h>\nint main(){ raise(SIGSEGV); return 0; }', language=50)
assert s.status == Status.RUNTIME_ERROR_SIGSEGV, s.status

s = run(source_code="while True: pass", language=71, cpu_time_limit=1, wall_time_limit=3)
assert s.status == Status.TIME_LIMIT_EXCEEDED, s.status

# async_run returns at once; wait polls until each is done.
s = judge0.async_run(client=client, submissions=Submission(source_code="print(6*7)", language=71))
assert s.token is not None
s = judge0.wait(client=client, submissions=s)
assert s.status == Status.ACCEPTED and s.stdout == "42\n", (s.status, s.stdout)

# Two at once go through the batch routes.
batch = judge0.run(client=client, submissions=[
    Submission(source_code="print(1)", language=71, expected_output="1"),
    Submission(source_code="print(2)", language=71, expected_output="1"),
])
print([b.status for b in batch])
assert [b.status for b in batch] == [Status.ACCEPTED, Status.WRONG_ANSWER], batch
print("ok")
