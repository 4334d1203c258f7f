"""The instructor's grading pipeline behind ``course grade``.

One module per step: :mod:`.collect` finds the submissions, :mod:`.repair` reads each
notebook and restores its graded cells, :mod:`.review` flags code that could tamper
with its tests, :mod:`.sandbox` and :mod:`.kernel` start the student's kernel in a
sandbox, :mod:`.preprocessors` make nbgrader's autograde robust, :mod:`.runner` grades a
class in parallel, :mod:`.gradebook` keeps the gradebook right, and :mod:`.results` and
:mod:`.report` hold and show the outcome. docs/GRADING.md is the instructor's guide.
"""
