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
h2 { font-size: 18px; margin: 32px 0 6px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
nav { font-size: 13px; margin: 8px 0 16px; }
nav a { margin-right: 14px; }
.runs { font-size: 12px; color: #555; background: #f6f6f6; border-left: 3px solid #bbb; padding: 4px 8px;
        margin: 6px 0 10px; }
.note { color: #666; font-style: italic; }
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
