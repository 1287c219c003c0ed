#!/usr/bin/env python3
"""Summarises one bench/run.sh result folder as the markdown of BENCHMARKS.md.

Reads, from RESULTS (bench/results/<timestamp>/):
  meta.json                       machine, versions, settings (written by run.sh)
  forward-<model>-t<threads>.json labeld's model forward (examples/forward --json)
  ort-<model>.json                ONNX Runtime on the same weights (bench/ort_bench.py --json)
  e2e-<model>-<set>-c<N>.json     end to end over gRPC (examples/load --json); set = imagenet | 12mp
  e2e-<model>-<set>-c<N>.rss.tsv  the server's VmRSS every 100 ms during that cell ("time kB")
  serve-<model>.json              the server's exit status after SIGTERM, VmHWM at the end
  decode-<model>-<set>.json       labeld's decode + preprocess on one thread (examples/decode --json)
  turbo-<model>-<set>.json        the same with libjpeg-turbo (bench/decode_bench.py --json)
  uptime-end.txt                  `uptime` after the last step

Prints the tables (model forward side by side with ORT, end to end), the targets with PASS/FAIL,
decoding against libjpeg-turbo with the end-to-end ceiling it implies, the machine, and the
command; writes the same to RESULTS/report.md and the verdicts to
RESULTS/summary.json. Missing pieces show as n/a (a partial run still reports). The exit status is
0 whatever the verdicts (1 only for an unreadable folder).

Targets (all ratios from this one run):
  forward:  labeld / ORT images/s, best batch of each, 2 threads (or the most measured) >= 1.0
  e2e:      c32 ImageNet-size images/s / labeld model-only best (same threads) >= 0.85
            c32 12-MP images/s / labeld model-only best >= 0.55
  latency:  c1 ImageNet-size p50 <= labeld model-only batch-1 p50 (same threads) + 3 ms
Where run.sh measured the model-only forward again next to the cells (near-*.json: batch 1
right before the c1 cell, the best batch right before and after the c32 ImageNet-size cell), the
c1 and c32 ImageNet-size targets use those (the mean of before and after), and show the forward
step's figure beside them: on a VM whose speed drifts, a baseline minutes away skews the ratio.
  memory:   the server's peak VmRSS during the 12-MP c32 cell <= 400 MB (10^6 bytes)

usage: python bench/report.py RESULTS
"""
import glob
import json
import os
import re
import sys

FWD_RATIO = 1.0
E2E_IMAGENET = 0.85
E2E_12MP = 0.55
C1_SLACK_MS = 3.0
RSS_LIMIT_MB = 400.0
TARGET_THREADS = 2
TARGET_C = 32


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def f1(x, nd=1):
    return 'n/a' if x is None else f'{x:.{nd}f}'


def rss_peak_mb(path):
    try:
        kb = [int(line.split()[1]) for line in open(path) if len(line.split()) == 2]
    except OSError:
        return None, 0
    return (max(kb) * 1024 / 1e6 if kb else None), len(kb)


def verdict(ok):
    return 'n/a' if ok is None else ('PASS' if ok else 'FAIL')


def main():
    if len(sys.argv) != 2 or not os.path.isdir(sys.argv[1]):
        print(__doc__, file=sys.stderr)
        return 1
    d = sys.argv[1]
    meta = load(os.path.join(d, 'meta.json')) or {}
    settings = meta.get('settings', {})
    out = []
    p = out.append

    # ---- gather -----------------------------------------------------------------------------
    models = []
    for path in sorted(glob.glob(os.path.join(d, '*.json'))):
        m = re.match(r'(?:forward|ort|e2e|serve|decode|turbo)-(lite\d)', os.path.basename(path))
        if m and m.group(1) not in models:
            models.append(m.group(1))
    order = settings.get('models', '').split()
    models.sort(key=lambda m: order.index(m) if m in order else len(order))

    fwd = {}   # (model, threads) -> {batch: row}
    for path in glob.glob(os.path.join(d, 'forward-*-t*.json')):
        j = load(path)
        m = re.match(r'forward-(lite\d)-t(\d+)\.json', os.path.basename(path))
        if j and m:
            fwd[(m.group(1), int(m.group(2)))] = {r['batch']: r for r in j['results']}
    ort = {}   # (model, threads) -> {batch: row}
    ort_meta = {}
    for model in models:
        j = load(os.path.join(d, f'ort-{model}.json'))
        if j:
            ort_meta[model] = j
            for r in j.get('results', []):
                ort.setdefault((model, r['threads']), {})[r['batch']] = r
    e2e = {}   # (model, set, c) -> json + rss
    for path in glob.glob(os.path.join(d, 'e2e-*-c*.json')):
        m = re.match(r'e2e-(lite\d)-(imagenet|12mp)-c(\d+)\.json', os.path.basename(path))
        j = load(path)
        if j and m:
            j['rss_peak_mb'], j['rss_samples'] = rss_peak_mb(path[:-len('.json')] + '.rss.tsv')
            e2e[(m.group(1), m.group(2), int(m.group(3)))] = j
    serve = {m: load(os.path.join(d, f'serve-{m}.json')) for m in models}
    decode = {}  # (engine, model, set) -> json
    for path in glob.glob(os.path.join(d, '*-lite*-*.json')):
        m = re.match(r'(decode|turbo)-(lite\d)-(imagenet|12mp)\.json', os.path.basename(path))
        j = load(path)
        if j and m:
            decode[(m.group(1), m.group(2), m.group(3))] = j

    def best(table):
        if not table:
            return None
        return max(table.values(), key=lambda r: r['images_per_s'])

    threads_all = sorted({t for (_, t) in list(fwd) + list(ort)})
    tt = TARGET_THREADS if TARGET_THREADS in threads_all else (max(threads_all) if threads_all else None)

    # ---- header -----------------------------------------------------------------------------
    p(f'# labeld benchmark, {meta.get("started_utc", "?")}')
    p('')
    p(f'Results folder `{os.path.relpath(d)}`. Machine: {meta.get("cpu_model", "?")}, '
      f'{meta.get("nproc", "?")} CPUs usable, {meta.get("mem_total_mb", "?")} MB; '
      f'commit `{meta.get("git_commit", "?")[:12]}`'
      + (f' with {meta["git_dirty_files"]} modified tracked file(s)' if meta.get('git_dirty_files') else '') + '.')

    # ---- model forward ----------------------------------------------------------------------
    p('')
    p('## Model forward (batch of preprocessed images; no decoding)')
    p('')
    p('labeld: `examples/forward` (`Classifier::classify`, softmax and feature maps included). '
      'ORT: `bench/ort_bench.py`, ONNX Runtime CPU on the same weights. Latency is one call, i.e. one '
      f'whole batch. {settings.get("forward_seconds", "?")} s per cell.')
    for model in models:
        p('')
        p(f'### {model}')
        p('')
        p('| threads | batch | labeld images/s | p50 ms | p90 ms | p99 ms | ORT images/s | p50 ms | p90 ms | p99 ms | labeld / ORT |')
        p('|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
        for t in threads_all:
            lt, ot = fwd.get((model, t), {}), ort.get((model, t), {})
            for b in sorted(set(lt) | set(ot)):
                a, o = lt.get(b), ot.get(b)
                ratio = a['images_per_s'] / o['images_per_s'] if a and o else None
                g = lambda r, k: f1(r[k]) if r else 'n/a'  # noqa: E731
                p(f'| {t} | {b} | {g(a, "images_per_s")} | {g(a, "p50_ms")} | {g(a, "p90_ms")} | {g(a, "p99_ms")} '
                  f'| {g(o, "images_per_s")} | {g(o, "p50_ms")} | {g(o, "p90_ms")} | {g(o, "p99_ms")} | {f1(ratio, 2)} |')
        for t in threads_all:
            a, o = best(fwd.get((model, t))), best(ort.get((model, t)))
            p('')
            p(f'- best batch, {t} thread(s): labeld {f1(a and a["images_per_s"])} images/s (batch {a and a["batch"]}), '
              f'ORT {f1(o and o["images_per_s"])} images/s (batch {o and o["batch"]})'
              + (f', ratio {a["images_per_s"] / o["images_per_s"]:.2f}' if a and o else ''))

    # ---- end to end -------------------------------------------------------------------------
    p('')
    p('## End to end over gRPC (`labeld serve`, `examples/load`)')
    p('')
    p(f'`labeld serve {settings.get("serve_flags", "")}` on 127.0.0.1; closed-loop callers sharing '
      f'{settings.get("connections", "?")} HTTP/2 connection(s), images round-robin; '
      f'{settings.get("load_seconds", "?")} s timed after a warm-up of {settings.get("warmup", "?")} s '
      f'(12 MP: {settings.get("warmup_12mp", "?")} s). Latency is end to end at the client; the stage '
      'columns are the server\'s own mean StageTimings (decode runs from receipt, so it includes the '
      'wait for a decode thread); images/s counts OK answers only. '
      'Peak RSS: the server\'s VmRSS sampled every 100 ms during the cell.')
    p('')
    p('| model | images | concurrency | images/s | p50 ms | p90 ms | p99 ms | decode ms | queue ms | inference ms | mean batch | non-OK | peak RSS MB |')
    p('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|')
    for (model, s, c) in sorted(e2e, key=lambda k: (models.index(k[0]) if k[0] in models else 99, k[1] != 'imagenet', k[2])):
        j = e2e[(model, s, c)]
        lat, st = j['latency_ms'], j['server_mean_ms']
        errs = ', '.join(f'{k} {v["count"]}' for k, v in j.get('errors', {}).items()) or '0'
        label = 'ImageNet-size' if s == 'imagenet' else '12 MP'
        p(f'| {model} | {label} | {c} | {f1(j["images_per_s"])} | {f1(lat["p50"])} | {f1(lat["p90"])} | {f1(lat["p99"])} '
          f'| {f1(st["decode"])} | {f1(st["queue"])} | {f1(st["inference"])} | {f1(j["mean_batch"], 2)} | {errs} '
          f'| {f1(j["rss_peak_mb"], 0)} |')
    for model in models:
        sv = serve.get(model)
        if sv:
            p('')
            p(f'- {model}: server exit status {sv["exit_code"]} after SIGTERM ({sv["stop_ms"]} ms); VmHWM over its whole '
              f'life {sv["vmhwm_kb"] * 1024 / 1e6:.0f} MB, VmRSS at the end {sv["vmrss_end_kb"] * 1024 / 1e6:.0f} MB.')

    # ---- decoding and the ceiling it sets -----------------------------------------------------
    if decode:
        cores = int(meta.get('nproc') or tt or 2)
        p('')
        p('## Decoding and preprocessing (one thread, the same files)')
        p('')
        p('labeld: `examples/decode` (`decode_and_prepare`, as a decode worker runs it: the scaled JPEG decode '
          'where the file allows, a full-size JPEG\'s YCbCr planes resized straight to the crop, resize, centre '
          'crop, normalise). libjpeg-turbo: '
          '`bench/decode_bench.py` (Pillow `draft()` to the smallest covering DCT scale, bicubic crop, '
          'normalise). Per image, one core. **Ceiling**: on this machine\'s '
          f'{cores} CPUs an image costs the model `{cores} / model-only images/s` CPU-seconds plus its '
          'decode, so end to end cannot pass `1 / (1 + decode_s x model-only images/s / CPUs)` of '
          'model-only throughput, whatever the server does.')
        p('')
        p('| model | images | file KiB | labeld ms | libjpeg-turbo ms (decode + rest) | labeld / turbo time '
          '| ceiling with labeld\'s decode | with libjpeg-turbo\'s | target |')
        p('|---|---|---:|---:|---:|---:|---:|---:|---:|')
        for model in models:
            a = best(fwd.get((model, tt)))
            for s_, goal in (('imagenet', E2E_IMAGENET), ('12mp', E2E_12MP)):
                lj, tj = decode.get(('decode', model, s_)), decode.get(('turbo', model, s_))
                if not lj and not tj:
                    continue

                def cell(j):
                    if not j:
                        return 'n/a'
                    if 'decode_mean_ms' not in j:  # labeld since 2026-12-06: one step for a JPEG
                        return f'{j["mean_ms"]:.1f}'
                    rest = j['mean_ms'] - j['decode_mean_ms']
                    return f'{j["mean_ms"]:.1f} ({j["decode_mean_ms"]:.1f} + {rest:.1f})'

                def ceiling(j):
                    if not (j and a):
                        return 'n/a'
                    share = 1 / (1 + j['mean_ms'] / 1e3 * a['images_per_s'] / cores)
                    return f'{100 * share:.0f}%'

                ratio = f1(lj['mean_ms'] / tj['mean_ms'], 2) if lj and tj else 'n/a'
                kib = (lj or tj)['mean_file_bytes'] / 1024
                label = 'ImageNet-size' if s_ == 'imagenet' else '12 MP'
                p(f'| {model} | {label} | {kib:.0f} | {cell(lj)} | {cell(tj)} | {ratio} | {ceiling(lj)} '
                  f'| {ceiling(tj)} | {100 * goal:.0f}% |')

    # ---- targets ----------------------------------------------------------------------------
    p('')
    p(f'## Targets (this run; model-only figures are labeld\'s own forward at {tt} thread(s))')
    p('')
    p('| target | measured | goal | result |')
    p('|---|---|---|---|')
    verdicts = []

    def target(name, measured, goal, ok, value=None):
        verdicts.append({'target': name, 'measured': measured, 'goal': goal, 'value': value, 'result': verdict(ok)})
        p(f'| {name} | {measured} | {goal} | {verdict(ok)} |')

    for model in models:
        a, o = best(fwd.get((model, tt))), best(ort.get((model, tt)))
        if a and o:
            r = a['images_per_s'] / o['images_per_s']
            target(f'{model} forward labeld / ORT, best batch, {tt} threads',
                   f'{a["images_per_s"]:.1f} (b{a["batch"]}) / {o["images_per_s"]:.1f} (b{o["batch"]}) = {r:.2f}x',
                   f'>= {FWD_RATIO:.1f}x', r >= FWD_RATIO, r)
        else:
            target(f'{model} forward labeld / ORT, best batch, {tt} threads', 'n/a', f'>= {FWD_RATIO:.1f}x', None)
        # Baselines measured again next to the cells (run.sh's e2e step), where there are any:
        # the forward step's figures are minutes older, and the VM's speed drifts.
        def near(tag, batch=None):
            j = load(os.path.join(d, f'near-{model}-{tag}-t{tt}.json')) or {}
            rows = [r for r in j.get('results', []) if batch is None or r['batch'] == batch]
            return rows[0] if rows else None
        around = [r for r in (near('c32-before'), near('c32-after')) if r]
        for s, goal in (('imagenet', E2E_IMAGENET), ('12mp', E2E_12MP)):
            e = e2e.get((model, s, TARGET_C))
            label = 'ImageNet-size' if s == 'imagenet' else '12 MP'
            name = f'{model} e2e c{TARGET_C} {label} / model-only best'
            if e and a:
                base, how = a['images_per_s'], ''
                if s == 'imagenet' and around:
                    base = sum(r['images_per_s'] for r in around) / len(around)
                    how = (f' (model-only b{around[0]["batch"]} measured just before / after the cell: '
                           + ' / '.join(f'{r["images_per_s"]:.1f}' for r in around)
                           + f'; against the forward step\'s best: {100 * e["images_per_s"] / a["images_per_s"]:.0f}%)')
                r = e['images_per_s'] / base
                bad = f', {e["errors_total"]} non-OK' if e.get('errors_total') else ''
                target(name, f'{e["images_per_s"]:.1f} / {base:.1f} = {100 * r:.0f}%{bad}{how}',
                       f'>= {100 * goal:.0f}%', r >= goal, r)
            else:
                target(name, 'n/a', f'>= {100 * goal:.0f}%', None)
        e = e2e.get((model, 'imagenet', 1))
        b1 = fwd.get((model, tt), {}).get(1)
        c1 = near('c1', 1)
        name = f'{model} e2e c1 ImageNet-size p50 <= model batch-1 p50 + {C1_SLACK_MS:g} ms'
        if e and (c1 or b1):
            base = c1 or b1
            limit = base['p50_ms'] + C1_SLACK_MS
            how = (f' (batch 1 measured just before the cell; {b1["p50_ms"]:.1f} ms in the forward step)'
                   if c1 and b1 else '')
            target(name, f'{e["latency_ms"]["p50"]:.1f} ms vs {base["p50_ms"]:.1f} + {C1_SLACK_MS:g} = {limit:.1f} ms{how}',
                   f'<= {limit:.1f} ms', e['latency_ms']['p50'] <= limit, e['latency_ms']['p50'] - base['p50_ms'])
        else:
            target(name, 'n/a', f'<= batch-1 p50 + {C1_SLACK_MS:g} ms', None)
        e = e2e.get((model, '12mp', TARGET_C))
        name = f'{model} server peak RSS, 12 MP c{TARGET_C}'
        if e and e.get('rss_peak_mb') is not None:
            target(name, f'{e["rss_peak_mb"]:.0f} MB ({e["rss_samples"]} samples)', f'<= {RSS_LIMIT_MB:.0f} MB',
                   e['rss_peak_mb'] <= RSS_LIMIT_MB, e['rss_peak_mb'])
        else:
            target(name, 'n/a', f'<= {RSS_LIMIT_MB:.0f} MB', None)
        sv = serve.get(model)
        if sv:
            target(f'{model} server exits 0 on SIGTERM after the load', f'exit {sv["exit_code"]}', 'exit 0',
                   sv['exit_code'] == 0)
        errs = sum(j.get('errors_total', 0) for (m, _, _), j in e2e.items() if m == model)
        if any(m == model for (m, _, _) in e2e):
            target(f'{model} no non-OK answers in any e2e cell', str(errs), '0', errs == 0)

    # ---- machine and commands ---------------------------------------------------------------
    try:
        uptime_end = open(os.path.join(d, 'uptime-end.txt')).read().strip()
    except OSError:
        uptime_end = 'n/a'
    ort_version = meta.get('onnxruntime') or next((j['machine']['onnxruntime'] for j in ort_meta.values()), 'n/a')
    p('')
    p('## Machine')
    p('')
    p('| | |')
    p('|---|---|')
    for k, v in (('CPU', f'{meta.get("cpu_model", "?")} ({", ".join(meta.get("simd", []))})'),
                 ('CPUs (nproc)', f'{meta.get("nproc", "?")} usable of {meta.get("logical_cpus", "?")}'),
                 ('memory', f'{meta.get("mem_total_mb", "?")} MB'),
                 ('kernel', meta.get('kernel', '?')),
                 ('load at start', meta.get('uptime_start', '?')),
                 ('load at end', uptime_end),
                 ('rustc', meta.get('rustc', '?')),
                 ('labeld', meta.get('labeld', '?')),
                 ('onnxruntime', ort_version),
                 ('python / numpy / Pillow', f'{meta.get("python", "?")} / {meta.get("numpy", "?")} / {meta.get("pillow", "?")}'),
                 ('git commit', f'{meta.get("git_commit", "?")}'
                  + (f' (+{meta["git_dirty_files"]} modified tracked files)' if meta.get('git_dirty_files') else '')),
                 ('LABELD_* environment', ', '.join(f'{k}={v}' for k, v in meta.get('labeld_env', {}).items()) or 'none')):
        p(f'| {k} | {v} |')
    p('')
    p('## Command')
    p('')
    env = ' '.join(f'{k}={json.dumps(v) if " " in v else v}' for k, v in sorted(meta.get('bench_env', {}).items()))
    p('```bash')
    p(f'{env + " " if env else ""}bash bench/run.sh')
    p('```')
    p('')
    p('Settings: ' + '; '.join(f'{k} `{v}`' for k, v in settings.items()) + '.')

    text = '\n'.join(out) + '\n'
    sys.stdout.write(text)
    with open(os.path.join(d, 'report.md'), 'w') as f:
        f.write(text)
    with open(os.path.join(d, 'summary.json'), 'w') as f:
        json.dump({'targets': verdicts, 'meta': meta}, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
