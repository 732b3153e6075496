# Shared by deploy/local/up and tests/run: makes sure PostgreSQL and RabbitMQ answer on
# 127.0.0.1, starting the machine's own instances when they do not.

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wait_for_port() {
  local name=$1 port=$2
  for _ in $(seq 1 90); do
    port_open "$port" && return 0
    sleep 1
  done
  echo "$name did not start listening on 127.0.0.1:$port" >&2
  return 1
}

ensure_services() {
  if ! port_open 5432; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
    wait_for_port PostgreSQL 5432
  fi
  production_like_postgres
  if ! port_open 5672; then
    echo "starting RabbitMQ"
    rabbitmq-server -detached
    wait_for_port RabbitMQ 5672
  fi
}

# Production never runs PostgreSQL without autovacuum, and the migrations tune it per table
# for the tasks and their logs: a server with it off (some machines are set up so) is
# switched on, persistently (ALTER SYSTEM), so that what runs here, the tests and the
# benchmarks above all, meets the database a deployment has.
production_like_postgres() {
  if [[ $(psql -h 127.0.0.1 -U postgres -d postgres -Atc "SHOW autovacuum") == off ]]; then
    echo "PostgreSQL runs with autovacuum off; turning it on (ALTER SYSTEM, reload)"
    psql -h 127.0.0.1 -U postgres -d postgres -q \
      -c "ALTER SYSTEM SET autovacuum = on" -c "SELECT pg_reload_conf()" >/dev/null
  fi
}
