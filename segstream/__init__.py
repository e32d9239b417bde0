"""What every segstream package shares (settings, errors, redaction) and the ``segstream`` CLI.

:mod:`.settings`, :mod:`.errors`, :mod:`.redact` and :mod:`.options` sit below every other
package; :mod:`.cli` sits above all of them and only assembles their commands.
"""
