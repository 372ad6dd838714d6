import asyncio

import pytest

from mobieye.slot import LatestSlot, SlotClosed


@pytest.mark.asyncio
async def test_drop_oldest_and_close() -> None:
    slot: LatestSlot[int] = LatestSlot(2)
    for i in range(5):
        slot.put(i)
    assert slot.dropped == 3
    assert await slot.get() == 3
    assert await slot.get() == 4
    getter = asyncio.ensure_future(slot.get())
    await asyncio.sleep(0)
    slot.put(9)
    assert await getter == 9
    slot.put(10)
    slot.close()
    assert await slot.get() == 10  # items put before close are still delivered
    with pytest.raises(SlotClosed):
        await slot.get()
