#!/usr/bin/env python3
"""Turns bench/run.sh's measurements into the table (stdout) and target/bench.json.

    python3 bench/report.py RESULTS.json OUT.json

Targets (from the issue), all on this machine:
  cold build          prebuilder no slower than the anchor
  unchanged relaunch  under 1 s, no container created
  code-only change    at most 0.25x the anchor's time
  image               no staged artifacts inside ours (the anchor keeps them all)
  hashing             at least 1 GB/s (1e9 bytes/s) on a 1 GiB artifact
  peak memory         under 64 MB (64e6 bytes, the stricter reading) while streaming it
  fresh runners (two engines, one registry, the second engine empty):
    registry hit      under 1 s, no blob pulled, the empty engine still empty after
    code-only change  dependency layer pulled, not rebuilt; at most 1.3x its floor
                      (docker pull of the previous result + the local code-only
                      rebuild) and under half of prebuilder's cold build there
    same inputs       the same image id and pushed digest on both engines
A missed target is printed as MISSED; the exit status stays 0.
"""

import json
import re
import sys


# prebuilder's progress events (`--progress json`, README "Machine output")
# that start a step, and the step's name in the table.
STEP_EVENTS = {
    "layer_hit": "hit", "layer_building": "plan", "creating_container": "create",
    "uploading": "upload", "running_setup": "setup", "writing_layer": "layer",
    "loading_layer": "load", "committing": "commit+tag",
}


def steps_ours(log, total):
    """Seconds per prebuilder step, from the stamped stderr log of a
    `--progress json` run: `<seconds> <JSON event>` per line."""
    marks = []
    with open(log, encoding="utf-8", errors="replace") as f:
        for line in f:
            stamp, _, rest = line.partition(" ")
            try:
                t, event = float(stamp), json.loads(rest)
            except ValueError:
                continue
            if not isinstance(event, dict) or event.get("v") != 1:
                continue
            name = STEP_EVENTS.get(event.get("event"))
            if name:
                marks.append((t, "%s %s" % (str(event.get("layer", ""))[:3], name)))
    out = []
    prev_t, prev_name = 0.0, "stage+hash"
    for t, name in marks:
        out.append((prev_name, t - prev_t))
        prev_t, prev_name = t, name
    out.append((prev_name, total - prev_t))
    return [(n, round(s, 2)) for n, s in out if s >= 0.005 or n != "stage+hash"]


def steps_anchor(log, total):
    """Seconds per Dockerfile step of the legacy builder, from its stamped output.

    A RUN step is split in two: the command itself, and the commit that follows
    its last line of output (until "Removing intermediate container")."""
    marks, cached = [], set()
    last_output = None
    with open(log, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = re.match(r"(\d+\.\d+) (.*)", line)
            if not m:
                continue
            t, text = float(m.group(1)), m.group(2)
            s = re.match(r"Step (\d+)/\d+ : (\S+)( \S+)?", text)
            if s:
                word = s.group(2)
                if word == "RUN" and s.group(3):
                    word = "RUN " + s.group(3).strip().split("/")[-1]
                marks.append((t, word))
                last_output = None
            elif "---> Using cache" in text and marks:
                cached.add(len(marks) - 1)
            elif text.startswith("Removing intermediate container") and marks:
                if last_output is not None and marks[-1][1].startswith("RUN"):
                    marks.append((last_output, "commit"))
            elif re.match(r"Successfully built [0-9a-f]{12}$", text):
                marks.append((t, "tag"))
            elif not text.startswith(" ---> "):
                last_output = t
    out = []
    prev_t, prev_name = 0.0, "send context"
    for i, (t, name) in enumerate(marks):
        out.append((prev_name, t - prev_t))
        prev_t = t
        prev_name = name + (" (cached)" if i in cached else "")
    out.append((prev_name, total - prev_t))
    return [(n, round(s, 2)) for n, s in out if s >= 0.005 or not n.startswith(("FROM", "tag"))]


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def fmt_steps(steps):
    return ", ".join("%s %.2f" % (n, s) for n, s in steps)


def fresh_rows(r, target):
    """The fresh-runner rows (two engines, one registry), or None when the
    run has none. Adds their targets; returns table rows and lines."""
    f = r.get("fresh")
    if not f:
        return None
    runs = f["runs"]
    mb = lambda n: n / 1e6
    outcomes = lambda run: ", ".join("%s %s" % (l["name"][:3], l["cache"]) for l in run["layers"])
    main_cold, cold, code, local = (runs[k] for k in ("cold-main", "cold-empty", "code-empty",
                                                      "code-local"))
    anchor = f["anchor"]["code"]["seconds"]
    pull = f["pull"]["pull-previous"]

    hits = [runs[k] for k in sorted(runs) if k.startswith("hit-")]
    hit_s = median([h["seconds"] for h in hits])
    after = f["hit_engine_after"]
    hit_met = (max(h["seconds"] for h in hits) < 1.0
               and all(h["cached"] and h["blob_bytes_pulled"] == 0 and h["images_on_engine_after"] == 0
                       and h["digest"] == main_cold["digest"]
                       and all(l["cache"] == "registry" for l in h["layers"]) for h in hits)
               and after["images"] == 0)
    target("registry hit on an empty engine", hit_s, "s",
           "< 1 s, 0 bytes pulled, base not pulled", hit_met,
           "%s of %d run(s): %s s; blob bytes pulled %s; images on the empty engine after: %d (%s)"
           % ("median" if len(hits) > 1 else "one", len(hits),
              "/".join("%.2f" % h["seconds"] for h in hits),
              "/".join(str(h["blob_bytes_pulled"]) for h in hits), after["images"],
              after["images_size"]))

    floor = pull["seconds"] + local["seconds"]
    deps_pulled = ([l["cache"] for l in code["layers"]] == ["registry", "miss"])
    floor_ratio, cold_ratio = code["seconds"] / floor, code["seconds"] / cold["seconds"]
    floor_met = deps_pulled and floor_ratio <= 1.3
    cold_met = deps_pulled and cold_ratio < 0.5
    target("code-only change on an empty engine vs its floor", round(floor_ratio, 3), "x",
           "dependency layer pulled; <= 1.3x (docker pull + local code-only rebuild)", floor_met,
           "%.2f s; floor %.2f s = docker pull of the previous result %.2f s + local code-only "
           "rebuild %.2f s; layers: %s" % (code["seconds"], floor, pull["seconds"],
                                           local["seconds"], outcomes(code)))
    target("code-only change on an empty engine vs prebuilder's cold build there",
           round(cold_ratio, 3), "x", "< 0.5x", cold_met,
           "%.2f s vs %.2f s" % (code["seconds"], cold["seconds"]))

    same_id = main_cold["image_id"] == cold["image_id"] and main_cold["image_id"] is not None
    same_digest = main_cold["digest"] == cold["digest"] and main_cold["digest"] is not None
    target("same inputs on two engines", same_id and same_digest, "", "same image id and digest",
           same_id and same_digest,
           "image ids %s / %s; digests %s / %s" % (main_cold["image_id"], cold["image_id"],
                                                   main_cold["digest"], cold["digest"]))

    eng = f["engine"]
    rows = [
        ("hit, empty engine", hit_s, anchor, max(h["containers_created"] for h in hits),
         outcomes(hits[0]), "< 1 s, 0 B pulled, no image", hit_met),
        ("cold, empty engine", cold["seconds"], anchor, cold["containers_created"],
         outcomes(cold), "(reference: pulls the base)", None),
        ("code, empty engine", code["seconds"], anchor, code["containers_created"],
         outcomes(code), "<= 1.3x floor, < 0.5x cold", floor_met and cold_met),
        ("same in, 2 engines", None, None, None,
         "id %s, digest %s" % ("same" if same_id else "DIFFERENT",
                               "same" if same_digest else "DIFFERENT"),
         "same id, same digest", same_id and same_digest),
    ]
    lines = [
        "(rows \"empty engine\": a second dockerd on %s (main engine: %s), every image on it removed "
        "between scenarios; base and results in one loopback registry; one run each, the hit %s; "
        "anchor = docker build of Beam's Dockerfile on the empty engine, one run, code-changed context)"
        % (eng["driver"], eng["main_driver"],
           "median of %d" % len(hits) if len(hits) > 1 else "one run"),
        "  hit:     %s s; blob bytes pulled %s; images on the empty engine after: %d (%s)"
        % ("/".join("%.2f" % h["seconds"] for h in hits),
           "/".join(str(h["blob_bytes_pulled"]) for h in hits), after["images"], after["images_size"]),
        "  code:    %.2f s = %.2fx its floor %.2f s (docker pull of the previous result %.2f s, "
        "%.0f MB, + local code-only rebuild %.2f s)   target <= 1.3x   %s"
        % (code["seconds"], floor_ratio, floor, pull["seconds"], mb(pull["blob_bytes_pulled"]),
           local["seconds"], "met" if floor_met else "MISSED"),
        "           %.2fx prebuilder's cold build on the empty engine (%.2f s)   target < 0.5x   %s;"
        " pulled %.0f MB; layers %s (local rebuild: %s)"
        % (cold_ratio, cold["seconds"], "met" if cold_met else "MISSED",
           mb(code["blob_bytes_pulled"]), outcomes(code), outcomes(local)),
        "  same inputs, main / empty engine: image id %s / %s" % (main_cold["image_id"],
                                                                   cold["image_id"]),
        "                                    digest   %s / %s" % (main_cold["digest"],
                                                                  cold["digest"]),
        "  first runner (main engine) cold build + push %.2f s (%s); base pushed to the registry "
        "in %.2f s" % (main_cold["seconds"], outcomes(main_cold), f["base_push_seconds"]),
    ]
    return {"rows": rows, "lines": lines}


def main():
    results_path, out_path = sys.argv[1], sys.argv[2]
    with open(results_path) as f:
        r = json.load(f)
    runs = r["runs"]
    for name, run in runs.items():
        run["scenario"] = name.split("-")[0]
        for who, parse in (("ours", steps_ours), ("anchor", steps_anchor)):
            run[who]["steps"] = parse(run[who]["log"], run[who]["seconds"])
        run["ratio"] = round(run["ours"]["seconds"] / run["anchor"]["seconds"], 3)
    targets = []

    def target(name, value, unit, goal, met, detail=""):
        targets.append({"name": name, "value": value, "unit": unit, "target": goal,
                        "met": bool(met), "detail": detail})

    rows = []
    sc = {}
    for key, label in (("cold", "cold build"), ("relaunch", "unchanged relaunch"),
                       ("code", "code-only change")):
        mine = [run for run in runs.values() if run["scenario"] == key]
        o = median([run["ours"]["seconds"] for run in mine])
        a = median([run["anchor"]["seconds"] for run in mine])
        ratio = o / a
        created = max(run["ours"]["containers_created"] for run in mine)
        first = mine[0]["ours"]
        layers = ", ".join("%s %s" % (l["name"][:3], l["cache"]) for l in first["layers"])
        outcomes = lambda run: [(l["name"], l["cache"]) for l in run["ours"]["layers"]]
        if any(outcomes(run) != outcomes(mine[0]) for run in mine):
            layers += " (varied!)"
        if key == "cold":
            goal, met = "<= anchor (ratio <= 1)", o <= a
            reruns = sum("--no-cache" in run["ours"].get("flags", []) for run in mine)
            if reruns:
                goal += ", %d ran --no-cache" % reruns
        elif key == "relaunch":
            goal = "< 1 s, 0 containers"
            met = max(run["ours"]["seconds"] for run in mine) < 1.0 and created == 0
        else:
            goal, met = "ratio <= 0.25", ratio <= 0.25
        sc[key] = {"runs": len(mine), "ours_seconds": o, "anchor_seconds": a,
                   "ratio": round(ratio, 3), "containers_created_max": created,
                   "ours_samples": [run["ours"]["seconds"] for run in mine],
                   "anchor_samples": [run["anchor"]["seconds"] for run in mine]}
        rows.append((label, o, a, ratio, created, layers, goal, met, mine))
        target(label, o, "s", goal, met,
               "%s of %d run(s): prebuilder %s s, anchor %s s; ratio %.2f; max %d container(s) created"
               % ("median" if len(mine) > 1 else "one", len(mine),
                  "/".join("%.2f" % x for x in sc[key]["ours_samples"]),
                  "/".join("%.2f" % x for x in sc[key]["anchor_samples"]), ratio, created))
    r["scenarios"] = sc

    img = r["images"]
    base = img["base"]["size"]
    oc, ac = img["ours"]["cold"], img["anchor"]["cold"]
    staged_wheels = r["requirements"]["wheels"]
    img_met = (oc["artifacts_files"] == 0 and img["ours"]["code"]["artifacts_files"] == 0
               and ac["artifacts_wheels"] >= staged_wheels)
    target("image: no staged artifacts", oc["artifacts_files"], "files",
           "0 in ours; anchor keeps all %d wheels" % staged_wheels, img_met,
           "ours %d B, anchor %d B (%d wheels) under /opt/apache/beam/artifacts"
           % (oc["artifacts_bytes"], ac["artifacts_bytes"], ac["artifacts_wheels"]))

    h = r["hashing"]
    hash_met = h["mb_per_s"] >= 1000
    target("hashing", round(h["mb_per_s"]), "MB/s", ">= 1000 MB/s", hash_met,
           "median of %d runs on %d bytes" % (len(h["runs"]), h["size"]))
    m = r["memory"]
    mem_met = m["peak_rss_mb"] < 64
    target("peak memory", round(m["peak_rss_mb"], 1), "MB", "< 64 MB", mem_met,
           "max RSS while hashing and streaming %d bytes" % m["staged_bytes"])

    mf = r.get("many_files")
    if mf:
        mf["steps"] = steps_ours(mf["log"], mf["seconds"])
        mf_met = mf["seconds"] < 60 and mf["labels_bytes"] < 64 * 1024
        target("%d staged files" % mf["files"], round(mf["seconds"], 2), "s",
               "< 60 s, labels < 64 KiB", mf_met,
               "labels %d bytes; %s" % (mf["labels_bytes"], fmt_steps(mf["steps"])))

    fresh = fresh_rows(r, target)

    ok = lambda b: "met" if b else "MISSED"
    mb = lambda n: n / 1e6
    print()
    print("prebuilder bench: %d-wheel, %.0f MB requirement set (%s), base %s"
          % (staged_wheels, mb(r["requirements"]["bytes"]),
             next((p for p in r["requirements"]["pins"] if p.startswith("scikit-learn")), "?"),
             img["base"]["image"]))
    print()
    print("%-20s %12s %9s %7s %10s  %-26s %-30s %s"
          % ("scenario", "prebuilder s", "anchor s", "ratio", "containers", "layers",
             "target", "met?"))
    for label, o, a, ratio, c, layers, goal, met, mine in rows:
        print("%-20s %12.2f %9.2f %7.2f %10d  %-26s %-30s %s"
              % (label, o, a, ratio, c, layers, goal, ok(met)))
    for label, o, a, c, layers, goal, met in fresh["rows"] if fresh else []:
        num = lambda x, w: ("%*.2f" % (w, x)) if x is not None else "%*s" % (w, "-")
        print("%-20s %s %s %s %10s  %-26s %-30s %s"
              % (label, num(o, 12), num(a, 9), num(o / a if o is not None and a else None, 7),
                 "-" if c is None else c, layers, goal, "-" if met is None else ok(met)))
    if any(len(row[8]) > 1 for row in rows):
        print("(medians; every run in seconds, prebuilder/anchor: %s)" % "; ".join(
            "%s %s" % (row[0].split()[0], ", ".join(
                "%.2f/%.2f" % (run["ours"]["seconds"], run["anchor"]["seconds"]) for run in row[8]))
            for row in rows if len(row[8]) > 1))
    if fresh:
        for line in fresh["lines"]:
            print(line)
    print()
    print("image size           prebuilder %.0f MB (+%.0f over base), anchor %.0f MB (+%.0f over base); "
          "base %.0f MB"
          % (mb(oc["size"]), mb(oc["size"] - base), mb(ac["size"]), mb(ac["size"] - base),
             mb(base)))
    print("staged artifacts     prebuilder %d files (%.1f MB), anchor %d files (%d wheels, %.1f MB)"
          "   target: none in ours, all in anchor   %s"
          % (oc["artifacts_files"], mb(oc["artifacts_bytes"]), ac["artifacts_files"],
             ac["artifacts_wheels"], mb(ac["artifacts_bytes"]), ok(img_met)))
    g = r["registry"]
    push, hit = g["push-cold"], g["registry-hit"]
    hit_met = (hit["seconds"] < 2 and hit["cached"] and hit["images_pulled"] == 0
               and all(l["cache"] == "registry" for l in hit["layers"])
               and hit["digest"] == push["digest"])
    target("registry hit", round(hit["seconds"], 2), "s", "< 2 s, no layer downloaded", hit_met,
           "images pulled: %d" % hit["images_pulled"])
    print("push of a cold build %.2f s to an empty local registry (digest %s)"
          % (push["seconds"], push["digest"][:19]))
    print("registry hit         %.2f s with the local images of it removed; %d images pulled, "
          "same digest: %s   target: < 2 s, no layer downloaded   %s"
          % (hit["seconds"], hit["images_pulled"], hit["digest"] == push["digest"],
             ok(hit_met)))
    print("hashing              %.0f MB/s on a 1 GiB artifact (median of %s)   target: >= 1000 MB/s   %s"
          % (h["mb_per_s"], ", ".join("%.0f" % x["mb_per_s"] for x in h["runs"]), ok(hash_met)))
    print("peak memory          %.1f MB (%d KiB max RSS) building with 1 GiB staged, in %.1f s"
          "   target: < 64 MB   %s"
          % (m["peak_rss_mb"], m["peak_rss_kib"], m["seconds"], ok(mem_met)))
    if mf:
        print("%-20s %.2f s, --no-cache, image labels %d bytes   target: < 60 s, labels < 64 KiB   %s"
              % ("%d files" % mf["files"], mf["seconds"], mf["labels_bytes"], ok(mf_met)))
        print("                     %s" % fmt_steps(mf["steps"]))
    print()
    print("where the time goes (s; the run with the median prebuilder time of each scenario):")
    for key in ("cold", "relaunch", "code"):
        mine = sorted((run for run in runs.values() if run["scenario"] == key),
                      key=lambda run: run["ours"]["seconds"])
        run = mine[(len(mine) - 1) // 2]
        print("  %-9s prebuilder: %s" % (key, fmt_steps(run["ours"]["steps"])))
        print("  %-9s anchor:     %s" % ("", fmt_steps(run["anchor"]["steps"])))
    print("  staging contexts by Beam (in neither time): %s s"
          % ", ".join("%.1f" % run["context"]["seconds"] for run in runs.values() if "context" in run))
    missed = [t["name"] for t in targets if not t["met"]]
    print()
    print("MISSED: %s" % ", ".join(missed) if missed else "all targets met")
    print("machine: %s, %d cores, load %s; engine %s; binary %s (%s)"
          % (r["machine"]["cpu"], r["machine"]["cores"], r["machine"]["loadavg_at_end"],
             r["machine"]["engine"], r["machine"]["binary"], r["machine"]["commit"]))

    r["targets"] = targets
    r["missed"] = missed
    with open(out_path, "w") as f:
        json.dump(r, f, indent=2)
        f.write("\n")
    print("JSON: %s" % out_path)


if __name__ == "__main__":
    main()
