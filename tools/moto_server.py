"""moto_server, with DynamoDB queries read from the queried partition.

moto 5.2 answers every Query by sorting the whole table (`Table.all_items`) and then filtering on
the partition key, so one query costs O(n log n) in the table's size. DynamoDB reads one
partition. With 100,000 transactions stored, each query of the pusher took the better part of a
second and the soak of the proof issue ran for hours. This launcher narrows the candidates of a
Query to the partition its key condition names, when that condition is on the table's partition
key (every base-table query, and every LSI query). The answer, its order, paging and errors are
unchanged: moto's own filter that follows keeps only items of that partition, in the same order.
Scans and everything else are moto's. `local/tests/moto_indexed.rs` checks the answers against
an unpatched moto_server.

Usage: python moto_server.py [moto_server arguments]
"""

import sys
import threading

from moto.dynamodb.models.table import Table
from moto.server import main

_scope = threading.local()
_all_items = Table.all_items
_query = Table.query


def _partition_value(table, args, kwargs):
    """The partition key value a Query is bound to, or None when it is not bound to one."""
    index_name = args[7] if len(args) > 7 else kwargs.get("index_name")
    if not index_name:
        return args[0] if args else kwargs.get("hash_key")
    for name, value in kwargs.get("hash_key_conditions") or []:
        if name == table.hash_key_attr:
            return value
    return None


def _query_in_partition(self, *args, **kwargs):
    partition = _partition_value(self, args, kwargs)
    if partition is None:
        return _query(self, *args, **kwargs)
    _scope.table, _scope.partition = self, partition
    try:
        return _query(self, *args, **kwargs)
    finally:
        _scope.table = _scope.partition = None


def _items_of_scope(self):
    if getattr(_scope, "table", None) is not self:
        return _all_items(self)
    # .get, not []: self.items is a defaultdict and a read must not create a partition.
    hash_set = self.items.get(_scope.partition)
    if hash_set is None:
        return []
    items = list(hash_set.values()) if self.range_key_attr else [hash_set]
    # moto's own order (hash key, then range key); one hash key here, so by range key.
    return sorted(
        items,
        key=lambda x: (x.hash_key, x.range_key) if x.range_key else x.hash_key,
    )


Table.query = _query_in_partition
Table.all_items = _items_of_scope

if __name__ == "__main__":
    sys.exit(main())
