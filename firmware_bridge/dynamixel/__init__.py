"""Arms built directly from DYNAMIXEL servos (Protocol 2.0): the ``dynamixel://`` bus backend
(:mod:`.bus`, through ``dynamixel-sdk``), the packet codec (:mod:`.packet`), the X-series
control table (:mod:`.control_table`) and the emulator's DYNAMIXEL mode (:mod:`.emulator`).
"""
