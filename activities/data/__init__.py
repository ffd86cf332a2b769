"""The product's data layer: all of its SQL, one module per concern (the business data, the
journal of a process's writes, events, webhooks, leads, the process library, reports). Each
function takes an asyncpg connection and runs in its caller's transaction where it writes. The
activities (activities/sale.py, activities/task_workflows.py, activities/bulk.py) and the CLI
(starter/) reach PostgreSQL only through here; the migrations are in migrations/."""
