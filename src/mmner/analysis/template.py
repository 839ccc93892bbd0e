"""The report's page shell: inline CSS, no scripts, no external assets (the file must open offline)."""

from __future__ import annotations

from string import Template

PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>$title</title>
<style>
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; margin: 0 auto;
       max-width: 1180px; padding: 0 24px 48px; }
h1 { font-size: 22px; margin: 24px 0 4px; }
h2 { font-size: 18px; margin: 32px 0 6px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
nav { font-size: 13px; margin: 8px 0 16px; }
nav a { margin-right: 14px; }
.runs { font-size: 12px; }
.runs table { margin: 4px 0 6px; font-size: 12px; }
.intro { margin: 4px 0; color: #444; }
.note { color: #666; font-style: italic; }
.warn { color: #8a4b00; background: #fff4e0; border-left: 3px solid #e0a030; padding: 4px 8px; }
section > details > summary { cursor: pointer; list-style: none; display: flex; align-items: baseline; gap: 12px;
       flex-wrap: wrap; margin: 22px 0 6px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
section > details > summary::-webkit-details-marker { display: none; }
section > details > summary::before { content: "▸"; color: #888; width: 12px; }
section > details[open] > summary::before { content: "▾"; }
section > details > summary h2 { display: inline; border: 0; margin: 0; padding: 0; }
.gist { color: #555; font-size: 13px; }
details > summary { cursor: pointer; }
.pair { display: flex; flex-wrap: wrap; gap: 8px 28px; align-items: flex-start; }
.pair > div { flex: 0 1 auto; max-width: 100%; }
.pair img.plot { max-width: 560px; }
.legend { display: flex; align-items: center; gap: 8px; font-size: 12px; color: #555; margin: 6px 0 10px; }
.legend .ramp { display: inline-block; width: 160px; height: 12px; border-radius: 2px; flex: none; }
.maps { margin: 10px 0 14px; }
.maps-head { font-size: 13px; margin-bottom: 2px; }
.maps-head .caption { color: #555; font-size: 12px; }
.maps img.plot { max-width: 100%; margin: 2px 0; }
table { border-collapse: collapse; margin: 8px 0 14px; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; vertical-align: top; }
th { background: #f2f2f2; }
td.l, th.l { text-align: left; }
tr.total td { font-weight: 600; background: #fafafa; }
.sig { font-weight: 600; }
.pos { color: #11692b; } .neg { color: #a11d1d; }
img.plot { max-width: 100%; margin: 6px 0; }
.ent { border-radius: 3px; padding: 0 2px; border: 1px solid #999; }
.ent sub { font-size: 9px; color: #555; margin-left: 2px; }
.ok { background: #dff3e4; border-color: #4caf50; }
.bad { background: #fbe3e3; border-color: #d9534f; }
.gold { background: #e6eefb; border-color: #5b7fc7; }
td.post { text-align: left; max-width: 420px; }
tr[id] td:first-child { white-space: nowrap; }
tr:target { outline: 2px solid #f0ad4e; }
</style>
</head>
<body>
<h1>$title</h1>
$body
</body>
</html>
""")
