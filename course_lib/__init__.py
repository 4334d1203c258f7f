"""Helper package for the transformer course.

Each module holds one idea of the course: the corpus, the tokenizers, the
checks that grade an exercise, and a reference implementation of every model
component once its notebook has taught it, so that later notebooks can build
on earlier ones even when a learner's own version is still unfinished.
"""

__version__ = "0.1.0"
