"""The passive DNS database on ClickHouse: one server or a sharded cluster.

`location` reads the `store="clickhouse://..."` setting, `schema` makes the
tables (`sie-dns-collector init-store`), `sql` writes each lookup,
`journal` keeps a batch until every shard has it, and `store` is the
Store interface over them. Only `store` needs the client library
(clickhouse-driver), and only once a store is opened.
"""
