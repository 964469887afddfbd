#!/bin/sh
# Creates the application's MariaDB account with only the privileges it needs.
#
# The mariadb image runs this once, when it initialises an empty data volume
# (docker-entrypoint-initdb.d; kept non-executable so the entrypoint sources it).
# Run by hand with sh it prints the SQL instead, so the
# same statements can be applied to an existing server:
#
#   DB_NAME=mqtt_framework DB_USER=mqtt_app DB_PASS=... sh docker/mariadb/10-app-user.sh | mariadb -uroot -p
#
# Privileges, on the application's database only (no global privilege, no GRANT
# OPTION, no DROP): SELECT, INSERT, UPDATE, DELETE for the queue and the app's
# tables; CREATE, ALTER and INDEX for `python main.py --migrate` and for the
# example app's table, which is created on first use. A password change later is
# an `ALTER USER` by the administrator: this script runs on first start only.

app_user_sql() {
    for name in "$DB_NAME" "$DB_USER"; do
        case "$name" in
            ''|*[!A-Za-z0-9_]*)
                echo "10-app-user.sh: DB_NAME and DB_USER must be letters, digits or '_'" >&2
                return 1 ;;
        esac
    done
    if [ "${#DB_PASS}" -lt 12 ]; then
        echo "10-app-user.sh: DB_PASS must be at least 12 characters" >&2
        return 1
    fi
    # A SQL string literal: backslashes and single quotes escaped.
    password=$(printf '%s' "$DB_PASS" | sed -e 's/\\/\\\\/g' -e "s/'/\\\\'/g")
    cat <<SQL
CREATE DATABASE IF NOT EXISTS \`$DB_NAME\` CHARACTER SET utf8mb4;
CREATE USER IF NOT EXISTS '$DB_USER'@'%' IDENTIFIED BY '$password';
GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX ON \`$DB_NAME\`.* TO '$DB_USER'@'%';
SQL
}

DB_NAME=${DB_NAME:-}
DB_USER=${DB_USER:-}
DB_PASS=${DB_PASS:-}

if command -v docker_process_sql >/dev/null 2>&1; then
    # Sourced by the image's entrypoint: run the statements as root.
    sql=$(app_user_sql) || exit 1
    printf '%s\n' "$sql" | docker_process_sql
else
    app_user_sql
fi
