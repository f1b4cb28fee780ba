#!/usr/bin/env python3
"""`make replay`: PersuasionForGood dialogues replayed through a running `make run`.

Each dialogue is one conversation of a fresh tenant: every prospect turn is sent to
process_message as a message (the turn's sentences joined by spaces, as the annotators cut them),
and the conversation is ended with its real outcome (won when the prospect donated). The
families detected in each answer (`objection`, `buying_signal`, `question`: the part of a
pattern's name before the dot) are scored against the annotated ones, turn by turn, beside the
three-regex rule on the same turns; and per family, phi of "the family appears in the
conversation" against winning, as annotated and as detected.

Standard library only. Usage (with `make run` up on :9000):
    python3 scripts/replay_p4g.py [FILE.jsonl ...] [--url http://127.0.0.1:9000] [--tenant NAME]
Files default to shared/corpora/p4g/annotated_dev.jsonl. Lines with `units` (annotated turns)
are scored; lines with plain `text` turns are replayed and ended only, for the outcome
correlation the feedback report then shows (`make feedback`, then `make report TENANT=...`).
With --label, each annotated turn's families are also sent to the labels route (correct for
each family annotated at that turn, not correct for the others), as a client that reviews its
agent's detections would: the tenant's detector layer learns from them and the report's
pattern accuracy counts them (figures on the labelled turns themselves, not a held-out test).
"""

import argparse
import json
import math
import re
import sys
import time
import urllib.error
import urllib.request

FAMILIES = ["objection", "buying_signal", "question"]


def post(url, tenant, path, body):
    data = json.dumps(body).encode()
    for attempt in range(8):
        request = urllib.request.Request(
            url + path,
            data=data,
            method="POST",
            headers={"content-type": "application/json", "x-tenant-id": tenant},
        )
        try:
            with urllib.request.urlopen(request, timeout=600) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as e:
            if e.code == 503 and attempt < 7:
                time.sleep(0.2 * (attempt + 1))
                continue
            raise SystemExit(f"{path}: HTTP {e.code}: {e.read().decode(errors='replace')}")
    raise SystemExit(f"{path}: kept failing")


def three_regexes(text):
    lower = text.lower().replace("\u2019", "'")
    words = set(re.split(r"[^\w']+", lower))
    found = set()
    if "?" in text:
        found.add("question")
    if words & {"no", "not", "don't", "dont", "can't", "cant", "won't", "wont"}:
        found.add("objection")
    if "$" in text or "donat" in lower:
        found.add("buying_signal")
    return found


class Tally:
    def __init__(self):
        self.tp = self.fp = self.fn = 0

    def add(self, said, gold):
        self.tp += said and gold
        self.fp += said and not gold
        self.fn += gold and not said

    def row(self, name):
        p = self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0
        r = self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        return f"| {name} | {p:.3} | {r:.3} | {f:.3} | {self.tp} / {self.fp} / {self.fn} |"


def phi(rows):
    """phi of (has the family, won) over (bool, bool) pairs."""
    n11 = sum(1 for a, b in rows if a and b)
    n10 = sum(1 for a, b in rows if a and not b)
    n01 = sum(1 for a, b in rows if not a and b)
    n00 = sum(1 for a, b in rows if not a and not b)
    d = (n11 + n10) * (n01 + n00) * (n11 + n01) * (n10 + n00)
    return (n11 * n00 - n10 * n01) / math.sqrt(d) if d else float("nan")


def main():
    args = argparse.ArgumentParser()
    args.add_argument("files", nargs="*", default=["shared/corpora/p4g/annotated_dev.jsonl"])
    args.add_argument("--url", default="http://127.0.0.1:9000")
    args.add_argument("--tenant", default=f"replay-{int(time.time())}")
    args.add_argument("--label", action="store_true", help="send the annotations as labels")
    opts = args.parse_args()
    detector = {f: Tally() for f in FAMILIES + ["micro"]}
    rule = {f: Tally() for f in FAMILIES + ["micro"]}
    annotated_rows = {f: [] for f in FAMILIES}
    detected_rows = {f: [] for f in FAMILIES}
    dialogues = scored = 0
    started = time.time()
    for path in opts.files:
        for line in open(path, encoding="utf-8"):
            dialogue = json.loads(line)
            conversation = re.sub(r"[^A-Za-z0-9._-]", "-", dialogue["dialogue_id"])[:64]
            won = dialogue["outcome"] == "won"
            seen, annotated = set(), set()
            for i, turn in enumerate(dialogue["turns"]):
                if "units" in turn:
                    text = " ".join(u["text"] for u in turn["units"])
                    gold = {f for u in turn["units"] for f in u["families"]}
                else:
                    text, gold = turn["text"], None
                answer = post(
                    opts.url,
                    opts.tenant,
                    f"/conversations/{conversation}/messages",
                    {"message_id": f"m-{i + 1}", "text": text},
                )
                said = {p["name"].split(".")[0] for p in answer["patterns"]} & set(FAMILIES)
                seen |= said
                if gold is None:
                    continue
                annotated |= gold
                scored += 1
                if opts.label:
                    post(
                        opts.url,
                        opts.tenant,
                        f"/conversations/{conversation}/labels",
                        [{"turn": i + 1, "pattern": f, "correct": f in gold} for f in FAMILIES],
                    )
                regex = three_regexes(text)
                for f in FAMILIES:
                    for tallies, found in ((detector, said), (rule, regex)):
                        tallies[f].add(f in found, f in gold)
                        tallies["micro"].add(f in found, f in gold)
            post(
                opts.url,
                opts.tenant,
                f"/conversations/{conversation}/end",
                {"outcome": "won" if won else "lost"},
            )
            dialogues += 1
            for f in FAMILIES:
                detected_rows[f].append((f in seen, won))
                annotated_rows[f].append((f in annotated, won))
    took = time.time() - started
    print(f"{dialogues} dialogues, {scored} annotated turns, tenant {opts.tenant}, {took:.0f} s\n")
    if scored:
        for title, tallies in (("salesloop (through make run)", detector), ("three regexes", rule)):
            print(f"{title}:\n\n| | precision | recall | F1 | TP / FP / FN |\n|---|---|---|---|---|")
            print(tallies["micro"].row("**micro**"))
            for f in FAMILIES:
                print(tallies[f].row(f))
            print()
    print("phi, family seen in the dialogue vs won:\n\n| family | annotated | detected |\n|---|---|---|")
    for f in FAMILIES:
        a = phi(annotated_rows[f]) if scored else float("nan")
        print(f"| {f} | {a:+.2f} | {phi(detected_rows[f]):+.2f} |")


if __name__ == "__main__":
    sys.exit(main())
