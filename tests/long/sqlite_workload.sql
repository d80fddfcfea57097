-- sqlite_workload.sql - a large transaction workload for the sqlite3 shell,
-- run by scripts/ci-long.sh once over glibc's malloc and once under
-- LD_PRELOAD=libspanmalloc.so; the two outputs must be byte-identical.
--
-- Everything is deterministic: the data comes from integer arithmetic on
-- row numbers (no random()), and whatever is printed is ordered, or hashed
-- with the shell's sha3_query() in a stated order.  A 128 MiB page cache
-- and temp_store=MEMORY put the page cache, the sorter and VACUUM's copy
-- of the database on the heap.
.bail on
.headers off
.mode list
.separator |
PRAGMA cache_size = -131072;
PRAGMA temp_store = MEMORY;
PRAGMA journal_mode = DELETE;

-- A 12,000-character text to cut values from: varied bytes, no short repeat.
CREATE TABLE src(s TEXT NOT NULL);
INSERT INTO src
WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < 11999)
SELECT group_concat(char(33 + (i * 7919 + i / 13) % 94), '') FROM c;

CREATE TABLE item(
    id INTEGER PRIMARY KEY,
    k INTEGER NOT NULL,
    grp INTEGER NOT NULL,
    name TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE ref(
    id INTEGER PRIMARY KEY,
    item_id INTEGER NOT NULL,
    note TEXT NOT NULL,
    weight REAL NOT NULL
);

-- The rows lo..hi of each table; each transaction inserts one range and
-- moves it on.  Bodies run from 8 bytes to 8 KiB: most under 400 bytes,
-- one in ten 1 to 4 KiB, one in a hundred 4 to 8 KiB (overflow pages).
CREATE TEMP TABLE r(lo INTEGER NOT NULL, hi INTEGER NOT NULL);
INSERT INTO r VALUES (1, 50000);
CREATE TEMP VIEW next_items AS
WITH RECURSIVE c(i) AS (SELECT lo FROM r UNION ALL SELECT i + 1 FROM c, r WHERE i < r.hi),
     sized(i, len) AS (SELECT i, CASE WHEN i % 100 = 0 THEN 4096 + (i * 31) % 4096
                                      WHEN i % 10 = 0 THEN 1024 + (i * 17) % 3072
                                      ELSE 8 + (i * 13) % 400 END FROM c)
SELECT i, (i * 2654435761) % 1000003, i % 97,
       printf('item-%06d-%s', i, substr(s, 1 + i % 5000, 5 + i % 20)),
       CAST(substr(s, 1 + (i * 97) % (12000 - len), len) AS BLOB)
FROM sized, src;
CREATE TEMP VIEW next_refs AS
WITH RECURSIVE c(j) AS (SELECT lo FROM r UNION ALL SELECT j + 1 FROM c, r WHERE j < r.hi)
SELECT j, 1 + (j * 7919) % 400000, substr(s, 1 + (j * 31) % 9000, 1 + (j * 7) % 600), (j % 1000) / 10.0
FROM c, src;

BEGIN; INSERT INTO item SELECT * FROM next_items; UPDATE r SET lo = lo + 50000, hi = hi + 50000; COMMIT;
BEGIN; INSERT INTO item SELECT * FROM next_items; UPDATE r SET lo = lo + 50000, hi = hi + 50000; COMMIT;
BEGIN; INSERT INTO item SELECT * FROM next_items; UPDATE r SET lo = lo + 50000, hi = hi + 50000; COMMIT;
BEGIN; INSERT INTO item SELECT * FROM next_items; UPDATE r SET lo = lo + 50000, hi = hi + 50000; COMMIT;
BEGIN; INSERT INTO item SELECT * FROM next_items; UPDATE r SET lo = lo + 50000, hi = hi + 50000; COMMIT;
BEGIN; INSERT INTO item SELECT * FROM next_items; UPDATE r SET lo = lo + 50000, hi = hi + 50000; COMMIT;
BEGIN; INSERT INTO item SELECT * FROM next_items; UPDATE r SET lo = lo + 50000, hi = hi + 50000; COMMIT;
BEGIN; INSERT INTO item SELECT * FROM next_items; UPDATE r SET lo = lo + 50000, hi = hi + 50000; COMMIT;
UPDATE r SET lo = 1, hi = 50000;
BEGIN; INSERT INTO ref SELECT * FROM next_refs; UPDATE r SET lo = lo + 50000, hi = hi + 50000; COMMIT;
BEGIN; INSERT INTO ref SELECT * FROM next_refs; UPDATE r SET lo = lo + 50000, hi = hi + 50000; COMMIT;
BEGIN; INSERT INTO ref SELECT * FROM next_refs; UPDATE r SET lo = lo + 50000, hi = hi + 50000; COMMIT;
BEGIN; INSERT INTO ref SELECT * FROM next_refs; UPDATE r SET lo = lo + 50000, hi = hi + 50000; COMMIT;

SELECT 'loaded', count(*), sum(length(body)), sum(k), max(length(body)) FROM item;
SELECT 'refs', count(*), sum(length(note)), sum(weight) FROM ref;
SELECT 'items hash', hex(sha3_query('SELECT * FROM item ORDER BY id'));

CREATE INDEX item_k ON item(k);
CREATE INDEX item_grp_name ON item(grp, name);
CREATE INDEX ref_item ON ref(item_id);
CREATE INDEX ref_note ON ref(substr(note, 1, 12));

-- Aggregates, a join, window functions, long group_concat strings, a sort
-- of an expression no index covers.
SELECT 'grp', grp, count(*), sum(length(body)), min(name), max(name)
FROM item GROUP BY grp ORDER BY grp LIMIT 5;
SELECT 'grp hash', hex(sha3_query('SELECT grp, count(*), sum(length(body)), min(name), max(name), avg(k) FROM item GROUP BY grp ORDER BY grp'));
SELECT 'join', i.grp, count(*), round(sum(r.weight), 1), sum(length(r.note))
FROM ref r JOIN item i ON i.id = r.item_id GROUP BY i.grp ORDER BY i.grp LIMIT 5;
SELECT 'join hash', hex(sha3_query('SELECT i.grp, r.id, i.name, length(r.note) FROM ref r JOIN item i ON i.id = r.item_id WHERE r.weight > 50 ORDER BY r.id'));
SELECT 'window hash', hex(sha3_query('SELECT id, row_number() OVER (PARTITION BY grp ORDER BY k, id), sum(length(body)) OVER (PARTITION BY grp ORDER BY id ROWS 5 PRECEDING) FROM item ORDER BY id'));
SELECT 'concat', grp, length(group_concat(name, ',')) FROM (SELECT grp, name FROM item ORDER BY grp, name) GROUP BY grp ORDER BY grp LIMIT 3;
SELECT 'concat hash', hex(sha3(group_concat(name, ','))) FROM (SELECT name FROM item ORDER BY name);
SELECT 'sort hash', hex(sha3_query('SELECT substr(body, 3, 2) AS b, count(*), sum(k) FROM item GROUP BY b ORDER BY count(*) DESC, b'));
SELECT 'lookup', count(*), sum(length(body)) FROM item WHERE k BETWEEN 250000 AND 260000;
SELECT 'by note', count(*) FROM ref WHERE substr(note, 1, 12) >= 'M' AND substr(note, 1, 12) < 'N';

-- Updates that grow and shrink rows, deletes, and new rows into the freed
-- pages.
BEGIN;
UPDATE item SET body = body || CAST(substr((SELECT s FROM src), 1 + id % 3000, 500 + id % 2500) AS BLOB) WHERE id % 5 = 0;
UPDATE item SET name = upper(name), body = substr(body, 1, 16) WHERE grp < 10;
UPDATE ref SET weight = weight * 2, note = note || note WHERE id % 11 = 0;
COMMIT;
BEGIN;
DELETE FROM item WHERE id % 7 = 3;
DELETE FROM ref WHERE item_id NOT IN (SELECT id FROM item);
COMMIT;
UPDATE r SET lo = 400001, hi = 450000;
BEGIN; INSERT INTO item SELECT * FROM next_items; COMMIT;
SELECT 'changed', count(*), sum(length(body)), sum(k) FROM item;
SELECT 'changed refs', count(*), sum(length(note)), sum(weight) FROM ref;
SELECT 'changed hash', hex(sha3_query('SELECT * FROM item ORDER BY id'));
SELECT 'integrity', * FROM pragma_integrity_check;

VACUUM;
SELECT 'vacuumed', page_count, freelist_count FROM pragma_page_count, pragma_freelist_count;
SELECT 'vacuumed hash', hex(sha3_query('SELECT * FROM item ORDER BY id')), hex(sha3_query('SELECT * FROM ref ORDER BY id'));

-- A copy in an in-memory database: every page on the heap.
ATTACH ':memory:' AS mem;
CREATE TABLE mem.copy AS SELECT * FROM item WHERE grp % 3 = 0;
CREATE INDEX mem.copy_name ON copy(name);
SELECT 'memory', count(*), sum(length(body)) FROM mem.copy;
SELECT 'memory hash', hex(sha3_query('SELECT * FROM mem.copy ORDER BY name, id'));
DETACH mem;
SELECT 'integrity', * FROM pragma_integrity_check;
