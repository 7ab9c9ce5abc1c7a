"""atheris fuzz target: any bytes given to ``protocol.decode`` raise only ProtocolError.

Run it with a time bound and the seed corpus (new finds are added to it)::

    python tests/fuzz/fuzz_decode.py -max_total_time=300 tests/fuzz/corpus

It is not a pytest test (pytest collects ``test_*.py`` files only, and nothing
here is named ``test_*``): coverage-guided fuzzing runs for minutes, outside
``make test``. Anything but a ProtocolError escaping decode
is a crash, which libFuzzer reports with the input that caused it. Refusals
must also keep their contract: an InvalidMessage with a reason and a message.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    import protocol
    import protocol._codec
    import protocol._envelope
    import protocol._schema


def check_one_input(data: bytes) -> None:
    try:
        envelope = protocol.decode(data)
    except protocol.ProtocolError as error:
        if not isinstance(error, protocol.InvalidMessage) or not error.reason or not str(error):
            raise AssertionError(f"refusal without reason or message: {error!r}") from error
        return
    # Accepted (a seed from the corpus, or a forgery if the fuzzer ever finds one):
    # it must be canonical and keep its id.
    if envelope.data != data or protocol.envelope_id(data) != envelope.id:
        raise AssertionError("an accepted envelope does not match its bytes")


def main() -> None:
    atheris.Setup(sys.argv, check_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
