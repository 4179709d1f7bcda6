"""A small program to try py-spy on: it builds a sales report over and over.

    python3 examples/demo.py              # runs for 10 seconds
    python3 examples/demo.py --seconds 60

Each round parses a few thousand CSV lines, summarizes them and renders a text report.
The work is plain Python (no libraries), so every box of its flame graph is a function
of this file. README.md shows the flame graph `py-spy record` makes of it
(examples/demo.svg; examples/render-flamegraph remakes it), and tests/readme.rs checks
that a fresh recording still has the same functions and lines.
"""
import sys
import time

REGIONS = ["north", "south", "east", "west"]
PRODUCTS = ["tea", "coffee", "cocoa", "juice", "water"]


def make_lines(count):
    lines = []
    for i in range(count):
        region = REGIONS[i % len(REGIONS)]
        product = PRODUCTS[(i * 7) % len(PRODUCTS)]
        lines.append("%d,%s,%s,%d,%d.%02d" % (i, region, product, 1 + i % 9, i % 50, i % 100))
    return lines


def parse_price(text):
    whole, cents = text.split(".")
    return int(whole) * 100 + int(cents)


def parse_line(line):
    fields = line.split(",")
    return (fields[1], fields[2], int(fields[3]), parse_price(fields[4]))


def load(lines):
    records = []
    for line in lines:
        records.append(parse_line(line))
    return records


def total_by(records, column):
    totals = {}
    for record in records:
        key = record[column]
        totals[key] = totals.get(key, 0) + record[2] * record[3]
    return totals


def median_price(records):
    prices = []
    for record in records:
        prices.append(record[3])
    prices.sort()
    return prices[len(prices) // 2]


def summarize(records):
    summary = {}
    summary["by region"] = total_by(records, 0)
    summary["by product"] = total_by(records, 1)
    summary["median price"] = median_price(records)
    return summary


def format_money(cents):
    return "%d.%02d" % (cents // 100, cents % 100)


def format_row(record):
    region, product, quantity, price = record
    return "  %-6s %-7s %3d x %8s" % (region, product, quantity, format_money(price))


def render(summary, records):
    out = []
    for title in ("by region", "by product"):
        out.append(title)
        for key, cents in sorted(summary[title].items()):
            out.append("  %-8s %12s" % (key, format_money(cents)))
    out.append("median price %s" % format_money(summary["median price"]))
    out.append("orders")
    for record in records:
        out.append(format_row(record))
    return "\n".join(out)


def main():
    seconds = 10.0
    if len(sys.argv) == 3 and sys.argv[1] == "--seconds":
        seconds = float(sys.argv[2])
    deadline = time.time() + seconds
    lines = make_lines(5000)
    rounds = 0
    while time.time() < deadline:
        records = load(lines)
        summary = summarize(records)
        report = render(summary, records)
        rounds += 1
    print(report[:report.index("orders")].rstrip())
    print("%d rounds in %.0f s" % (rounds, seconds))


if __name__ == "__main__":
    main()
