"""`bastion serve`, with the captcha answers also written to a file, for benchmarks that
must sign in to the console (bench/pages.py).

    python -m bench.console_server PORT ANSWERS_FILE   (with the usual BASTION_* env)

The production app and server, as tests/e2e/server.py runs them; nothing in Bastion
itself can be switched to record answers.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bastion.cli_setup import prepared_settings
from bastion.web import server
from bastion.web.app import create_app
from bastion.web.auth.captcha import new_answer


def main() -> None:
    port, answers_file = int(sys.argv[1]), Path(sys.argv[2])

    def recording_answers() -> str:
        answer = new_answer()
        with answers_file.open("a", encoding="utf-8") as handle:
            handle.write(answer + "\n")
        return answer

    settings = prepared_settings()
    server.run(create_app(settings, captcha_answers=recording_answers), host="127.0.0.1", port=port)


if __name__ == "__main__":
    main()
