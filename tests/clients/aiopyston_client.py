"""The Piston client for asyncio (`aiopyston` on PyPI) against Kiln's Piston face: lists the
runtimes, runs a python program with stdin and args and a C program that does not compile, and
reads Piston's error message. Env: KILN_BASE, KILN_TOKEN. Exits non-zero on the first mismatch."""
import asyncio
import os

from pyston import File, PystonClient
from pyston.exceptions import ExecutionError


async def main():
    # aiopyston sends its key bare (`Authorization: <key>`) and posts to `execute/`.
    client = PystonClient(api_key=os.environ["KILN_TOKEN"], base_url=os.environ["KILN_BASE"] + "/api/v2/")
    try:
        runtimes = await client.runtimes()
        by_name = {r.language: r for r in runtimes}
        print("runtimes:", sorted(f"{r.language}-{r.version}" for r in runtimes))
        assert "python" in by_name and "c" in by_name, by_name
        assert "c++" in await client.languages() or "c++" not in by_name
        python = by_name["python"]

        code = "import sys\nprint('hello', input())\nprint(sys.argv[1:])\n"
        out = await client.execute("python", [File(code, "main.py")], stdin="kiln", args=["x", "y"])
        print(out.raw_json)
        assert out.raw_json["version"] == python.version, out.raw_json
        assert out.run_stage.stdout == "hello kiln\n['x', 'y']\n", out.raw_json
        assert out.run_stage.code == 0 and out.run_stage.signal is None, out.raw_json
        assert out.compile_stage is None
        assert out.success

        # A file without a name: the client sends "" and the first file is the program.
        out = await client.execute("c", [File("int main( { return 0; }\n")])
        print(out.raw_json)
        assert out.compile_stage is not None, out.raw_json
        assert out.compile_stage.code != 0, out.raw_json
        assert "error" in out.raw_json["compile"]["stderr"], out.raw_json
        assert out.raw_json["run"] == out.raw_json["compile"], out.raw_json

        try:
            await client.execute("python", [File(code)], version="0.1")
            raise SystemExit("an unknown version ran")
        except ExecutionError as e:
            assert str(e) == "python-0.1 runtime is unknown", e
    finally:
        await client.close_session()
    print("ok")


asyncio.run(main())
