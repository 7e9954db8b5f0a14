import intc
from intc_mg import mg_insert_many, mg_delete_many

def run():
    ic = intc.IncClient()
    us_path = '/tmp/us1'
    for i in range(1):
        # one redis command
        ic.redis_one(us_path, 6379, 1, ("set", "a", "bcd%d" % i))
        # several redis commands in one transaction
        ic.redis_many(us_path, 6379, 2,
            (("set", "cool", "hello%d" % i), ("set", "awesome", "中文你好%d" % i)))
        # delete matching mongo documents
        ic.mongo_exec(us_path, 'mongo_db_name', 'mongo_col_name',
                      mg_delete_many({'key': 'value'}))

run()
