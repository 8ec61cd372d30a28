#!/usr/bin/env bash
# format-check.sh — fail when a tracked C file drifts from .clang-format (`make format` fixes it).
set -euo pipefail
cd "$(dirname "$0")/.."
bad=()
while IFS= read -r f; do
	clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done < <(git ls-files '*.c' '*.h')
if [ ${#bad[@]} -gt 0 ]; then
	echo "format-check: ${#bad[@]} file(s) differ from .clang-format (run \`make format\`):" >&2
	printf '  %s\n' "${bad[@]}" >&2
	exit 1
fi
echo "format-check: $(git ls-files '*.c' '*.h' | wc -l) files formatted"
