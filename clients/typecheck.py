"""The TypeScript side of clients/check.sh.

`typecheck.py write CAPTURE_JSON OUT_TS` writes a file that assigns the JSON captured by
workflow.py to the types openapi-typescript generated: each response to its operation's
response type and each request body to its request body type (and OUT_TS.lines.json, the step
of each line). `tsc --strict --noEmit` over it must report no error.

`typecheck.py table CAPTURE_JSON OUT_TS TSC_OUTPUT` prints step | python | typescript, with
tsc's errors given to the steps of their lines, and exits 1 unless every cell is ok.
"""

import json
import re
import sys


def write(capture, out):
    steps = json.load(open(capture, encoding="utf-8"))
    lines = ['import type { paths } from "./schema";', ""]
    owners = {}
    for i, step in enumerate(steps):
        if "response" not in step:
            continue
        operation = f'paths[{json.dumps(step["path"])}][{json.dumps(step["method"])}]'
        start = len(lines) + 1
        lines.append(
            f'export const response{i}: {operation}["responses"][{step["status"]}]'
            f'["content"]["application/json"] = {json.dumps(step["response"], ensure_ascii=False)};'
        )
        if step["request"] is not None:
            lines.append(
                f'export const request{i}: NonNullable<{operation}["requestBody"]>'
                f'["content"]["application/json"] = {json.dumps(step["request"], ensure_ascii=False)};'
            )
        for line in range(start, len(lines) + 1):
            owners[line] = step["step"]
    with open(out, "w", encoding="utf-8") as ts:
        ts.write("\n".join(lines) + "\n")
    with open(out + ".lines.json", "w", encoding="utf-8") as index:
        json.dump(owners, index)


def table(capture, out, tsc_output):
    steps = json.load(open(capture, encoding="utf-8"))
    owners = json.load(open(out + ".lines.json", encoding="utf-8"))
    ts_errors = {}
    unplaced = []
    for line in open(tsc_output, encoding="utf-8"):
        found = re.search(r"\((\d+),\d+\): error (TS\d+: .*)", line)
        if found and found.group(1) in owners:
            ts_errors.setdefault(owners[found.group(1)], []).append(found.group(2))
        elif "error" in line:
            unplaced.append(line.strip())
    width = max(len(s["step"]) for s in steps)
    print(f"{'step':<{width}} | python | typescript")
    print(f"{'-' * width}-|--------|-----------")
    ok = len(steps) == 12 and not unplaced
    for step in steps:
        python = "ok" if step["ok"] else "fail"
        typescript = "fail" if step["step"] in ts_errors or "response" not in step else "ok"
        ok = ok and python == typescript == "ok"
        print(f"{step['step']:<{width}} | {python:<6} | {typescript}")
    for step, errors in ts_errors.items():
        for error in errors:
            print(f"typescript: {step}: {error}", file=sys.stderr)
    for line in unplaced:
        print(f"typescript: {line}", file=sys.stderr)
    if len(steps) != 12:
        print(f"python: the workflow stopped after {len(steps)} of 12 steps", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(*sys.argv[2:4])
    else:
        sys.exit(table(*sys.argv[2:5]))
