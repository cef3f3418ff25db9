// A TimescaleDB-enabled PostgreSQL for the test suite, on 127.0.0.1.
//
// PGlite is PostgreSQL compiled to WebAssembly; this build carries the TimescaleDB
// extension.  pglite-socket speaks the PostgreSQL wire protocol for it, so psycopg and
// asyncpg connect as to any server.  It serves ONE connection at a time (others wait in
// a queue) and runs no background workers: TimescaleDB jobs run when called (run_job).
//
// Usage: node server.mjs [PORT]  (0 or nothing: a free port).  Prints "listening PORT"
// once it accepts connections; stops on SIGTERM or SIGINT.  Data lives in memory.
import { PGlite } from '@electric-sql/pglite'
import { timescaledb } from '@electric-sql/pglite/timescaledb'
import { PGLiteSocketServer } from '@electric-sql/pglite-socket'

const port = Number(process.argv[2] ?? 0)
const db = await PGlite.create({ extensions: { timescaledb } })
const server = new PGLiteSocketServer({ db, host: '127.0.0.1', port })
server.addEventListener('listening', (event) => {
  process.stdout.write(`listening ${event.detail.port}\n`)
})
await server.start()

const stop = async () => {
  await server.stop()
  await db.close()
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
