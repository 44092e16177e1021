"""Runs and studies: one run end to end (``run``), a study of many (``study``), ``ppvae sample`` (``sample``)
and ``ppvae compare`` (``compare``)."""
