"""Pure domain: names, ids, units, errors and policy decisions. No I/O, imports nothing of ours."""
