raise RuntimeError("this prestartup script fails on purpose")
