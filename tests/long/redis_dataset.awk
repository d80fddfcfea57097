# redis_dataset.awk - a deterministic data set for redis-server, written as
# Redis protocol for `redis-cli --pipe`; scripts/ci-long.sh loads it into
# every server it tests and reads it back with redis_checks.txt.
#
#   awk -f redis_dataset.awk >dataset.resp
#
# Strings from 1 byte to 6 KiB grown with APPEND and SETRANGE, counters,
# lists, hashes, sets and sorted sets on both sides of Redis's compact
# encodings (listpack, intset) and the converted ones (quicklist,
# hashtable, skiplist), then deletes.  Values are cut from a 16 KiB text
# built from integer arithmetic: no randomness, so every run writes the
# same data.

function cmd(n, a1, a2, a3, a4,    i, out, a) {
	a[1] = a1; a[2] = a2; a[3] = a3; a[4] = a4
	out = "*" n "\r\n"
	for (i = 1; i <= n; i++)
		out = out "$" length(a[i]) "\r\n" a[i] "\r\n"
	printf "%s", out
}

# len bytes of the text, starting at a place that depends on seed.
function val(seed, len) {
	return substr(text, 1 + (seed * 7919) % (16384 - len), len)
}

BEGIN {
	# Printable ASCII only, so that awk's length() counts bytes in any locale.
	for (i = 0; i < 16384; i++)
		text = text sprintf("%c", 33 + (i * 131 + int(i / 7)) % 94)

	for (i = 0; i < 30000; i++) {
		len = (i % 20 == 0) ? 2000 + (i * 37) % 4000 : 1 + (i * 13) % 300
		cmd(3, "SET", "str:" i, val(i, len))
	}
	for (i = 0; i < 30000; i += 3)
		cmd(3, "APPEND", "str:" i, val(i + 1, 100 + (i * 7) % 900))
	for (i = 0; i < 30000; i += 7)
		cmd(4, "SETRANGE", "str:" i, 400 + i % 200, val(i + 2, 50))
	for (i = 0; i < 30000; i += 13)
		cmd(2, "DEL", "str:" i)

	for (i = 0; i < 1000; i++)
		for (j = 1; j <= 5; j++)
			cmd(3, "INCRBY", "cnt:" i, i * j - 700)

	for (i = 0; i < 600; i++) {
		for (j = 0; j < 150; j++)
			cmd(3, "RPUSH", "list:" i, val(i * 1000 + j, 5 + (i + j * 11) % 600))
		for (j = 0; j < 20; j++)
			cmd(3, "LPUSH", "list:" i, "head-" j)
		for (j = 0; j < 10; j++)
			cmd(2, "LPOP", "list:" i)
		cmd(2, "RPOP", "list:" i)
		cmd(4, "LTRIM", "list:" i, 0, 120 - i % 50)
		cmd(4, "LSET", "list:" i, 3, val(i, 700))
	}

	for (i = 0; i < 600; i++) {
		nf = (i % 3 == 0) ? 200 : 60
		for (j = 0; j < nf; j++)
			cmd(4, "HSET", "hash:" i, "field:" j, val(i * 300 + j, 1 + (i * 3 + j) % 200))
		for (j = 0; j < nf; j += 9)
			cmd(3, "HDEL", "hash:" i, "field:" j)
		cmd(4, "HINCRBY", "hash:" i, "count", i * 17)
	}

	for (i = 0; i < 600; i++) {
		if (i % 2 == 0)
			for (j = 0; j < 50; j++)
				cmd(3, "SADD", "set:" i, (i * 1000003 + j * 7919) % 1000000)
		else
			for (j = 0; j < 300; j++)
				cmd(3, "SADD", "set:" i, "member:" val(i + j, 8 + j % 40))
		for (j = 0; j < 300; j += 11)
			cmd(3, "SREM", "set:" i, (i % 2 == 0) ? (i * 1000003 + j * 7919) % 1000000 : "member:" val(i + j, 8 + j % 40))
	}

	for (i = 0; i < 600; i++) {
		for (j = 0; j < 200; j++)
			cmd(4, "ZADD", "zset:" i, (j * 37) % 1000 + j / 1000, "m:" j ":" val(i + j, 4 + j % 30))
		for (j = 0; j < 200; j += 17)
			cmd(4, "ZINCRBY", "zset:" i, 1000 + j, "m:" j ":" val(i + j, 4 + j % 30))
		cmd(4, "ZREMRANGEBYRANK", "zset:" i, 0, 9)
	}
}
