"""
Summarise py-spy's collapsed stacks (C{run.py --profile DIR} writes them):
where the server's time goes, by source file and by function, as shares of
all samples.  Self time is charged to the innermost frame; inclusive time
to every distinct frame on the stack.

    python benchmarks/profile_summary.py DIR/txtus-a-1.txt [--top 25]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def _short(path: str) -> str:
    for marker in ("site-packages/", "/lib/python3", "/work/main/"):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "/lib/python3" and "/" in tail else tail
    return path


def summarise(path: str, top: int) -> str:
    by_file: Counter = Counter()
    by_function: Counter = Counter()
    inclusive: Counter = Counter()
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            total += count
            frames = []
            for frame in stack.split(";"):
                match = _FRAME.match(frame)
                function, file = (match.group("function"), _short(match.group("file"))) if match else (frame, "?")
                frames.append((function, file))
            leaf_function, leaf_file = frames[-1]
            by_file[leaf_file] += count
            by_function[f"{leaf_function} ({leaf_file})"] += count
            for name in {f"{function} ({file})" for function, file in frames}:
                inclusive[name] += count
    if not total:
        return f"{path}: no samples"
    lines = [f"{path}: {total} samples", "", "self time by file:"]
    lines += [f"  {100.0 * n / total:5.1f}%  {name}" for name, n in by_file.most_common(top)]
    lines += ["", "self time by function:"]
    lines += [f"  {100.0 * n / total:5.1f}%  {name}" for name, n in by_function.most_common(top)]
    lines += ["", "inclusive time, txtus functions:"]
    lines += [f"  {100.0 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common()
              if "txtus/" in name][:top]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    for name in args.files:
        print(summarise(name, args.top))
        print()
