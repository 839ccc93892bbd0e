"""Analysis of finished runs (DESIGN §2): entity and length slices, paired bootstrap, learning curves,
relation split, attention maps and the HTML report of `mmner report`."""
